"""Token-bucket rate limits on inbound ``ws/user/`` frames, per connection and per user.

Each connection has its own bucket (``RATE_LIMIT_RATE`` / ``RATE_LIMIT_BURST``), and all
connections of one user in one server process share a second one
(``USER_RATE_LIMIT_RATE`` / ``USER_RATE_LIMIT_BURST``), so opening more tabs does not buy
more throughput. A frame is accepted only when both buckets hold a token.

The per-user bucket is per process: a user whose connections land on N server processes
gets at most N times the per-user rate, and never more than the per-connection rate on
each connection. The defaults (burst 20, then 10 frames a second per connection; burst
40, then 20 a second per user) never limit a person typing and always limit a script.

:class:`FloodDetector` counts how often a connection was limited, so the consumer can
close a client that keeps flooding instead of answering each frame with an error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .conf import number_setting, valid_setting


class TokenBucket:
    """A bucket of ``burst`` tokens refilled at ``rate`` tokens a second.

    ``clock`` returns seconds (monotonic by default); tests may pass their own.
    """

    __slots__ = ("_clock", "_lock", "burst", "rate", "tokens", "updated")

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
            raise ValueError(f"rate must be a positive number of tokens a second, got {rate!r}.")
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) or burst < 1:
            raise ValueError(f"burst must be a number of tokens >= 1, got {burst!r}.")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self.updated = clock()
        # Buckets of users are shared by consumers that may run on different event loops
        # of one process (for example under async_to_sync); the lock keeps take() atomic.
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, tokens: float = 1) -> bool:
        """Take ``tokens`` if the bucket holds them; return whether it did."""
        with self._lock:
            self._refill(self._clock())
            if self.tokens >= tokens:
                self.tokens -= tokens
                return True
            return False

    def give_back(self, tokens: float = 1) -> None:
        """Return tokens taken for a frame that another bucket refused."""
        with self._lock:
            self.tokens = min(self.burst, self.tokens + tokens)


class UserBuckets:
    """The per-user buckets of one process, kept while the user has a connection here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[TokenBucket, int]] = {}

    def acquire(self, user_key: str, rate: float, burst: float) -> TokenBucket:
        """The bucket of ``user_key``, created on the first of their connections."""
        with self._lock:
            bucket, users = self._buckets.get(user_key, (None, 0))
            if bucket is None:
                bucket = TokenBucket(rate, burst)
            self._buckets[user_key] = (bucket, users + 1)
            return bucket

    def release(self, user_key: str) -> None:
        """Forget the bucket when the user's last connection in this process closes."""
        with self._lock:
            bucket, users = self._buckets.get(user_key, (None, 0))
            if bucket is None:
                return
            if users <= 1:
                del self._buckets[user_key]
            else:
                self._buckets[user_key] = (bucket, users - 1)

    def __len__(self) -> int:
        return len(self._buckets)


#: The per-user buckets of this process.
user_buckets = UserBuckets()


class FloodDetector:
    """Counts refusals of one connection; ``flooding`` once ``limit`` fall in ``window`` s."""

    def __init__(
        self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque()

    def record(self) -> bool:
        """Record one refusal; return True when the connection should be closed."""
        now = self._clock()
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times) >= self.limit


def rate_setting(rate_name: str, burst_name: str) -> tuple[float, float] | None:
    """``(rate, burst)`` from two settings, or None when the rate is None (no limit).

    Both are validated by their specs in :data:`django_presence.conf.SPECS`.
    """
    rate: float | None = valid_setting(rate_name)
    if rate is None:
        return None
    return rate, number_setting(burst_name, minimum=1)


def flood_setting() -> tuple[int, float] | None:
    """``(FLOOD_CLOSE_AFTER, FLOOD_WINDOW)``, or None when closing floods is off."""
    limit: int | None = valid_setting("FLOOD_CLOSE_AFTER")
    if limit is None:
        return None
    return limit, number_setting("FLOOD_WINDOW", allow_zero=False)
