"""Going offline at the end of a grace period: one sweep when closing leases expire.

Part of the runtime layer (one :class:`GraceSweeps` per
:class:`~django_presence.runtime.Runtime`, hence per event loop). When a clean close
leaves the user's last lease *closing* (``OFFLINE_GRACE_PERIOD`` > 0), the runtime
schedules here one sweep just after that lease expires, so that the user goes offline
about ``OFFLINE_GRACE_PERIOD`` after the close rather than at the next beat's sweep (up
to ``HEARTBEAT_INTERVAL`` later).

- **Coalesced.** Expiries are rounded up to a bucket of :data:`BUCKET` seconds: a
  thousand closes in the same instant cost one sweep, not one per user.
- **Exactly once.** The sweep is the backend's atomic :meth:`sweep` (without the sweep
  lock, which is the beat's), so a sweep racing another server's, or the beat, finds
  each expired lease once: each OFFLINE is announced by whichever sweep removed it. A
  user who reconnected within the grace period has no closing lease left: nothing to
  announce.
- **Clock skew.** Leases are timed by the backend's clock (Redis ``TIME``), the timer by
  the loop's: a user the sweep did not take offline is swept once more
  :data:`RETRY_AFTER` seconds later (at most once per bucket). Whatever is left after
  that is swept by the beat, as before.
- **No leak.** Each bucket is one task; a task that ends (or is cancelled when its loop
  shuts down) is forgotten at once, and :meth:`GraceSweeps.stop` cancels them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from . import metrics
from .backends import Change, Transition, get_backend
from .ids import SERVER_ID

logger = logging.getLogger(__name__)

#: Expiries within one bucket of this many seconds share one sweep.
BUCKET = 0.25
#: How long after the lease's expiry (on the loop's clock) the sweep runs, at least.
MARGIN = 0.05
#: How long after a sweep that missed a user (clock skew) the one retry runs.
RETRY_AFTER = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended (the timers' ``stop()``).

    A task that is still running a moment after its cancellation is cancelled again,
    every 0.1 s: a cancellation can be lost on the way (on Python 3.11,
    ``asyncio.wait_for``, which redis-py uses, swallows one that arrives as its inner
    call completes), and the runtime's timer would then go on to its next beat instead
    of ending. An exception a task ended with other than its cancellation is raised.
    """
    tasks = list(tasks)
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def kept_closing_lease(change: Change, grace: float) -> bool:
    """Whether ``remove_connection(..., grace=grace)`` returning ``change`` left a closing lease.

    No transition and no open connection left: the user is online only through a closing
    lease (or was not online at all, when the connection was unknown: a sweep then finds
    nothing, which is harmless).
    """
    return grace > 0 and change.transition is Transition.NONE and change.connection_count == 0


class GraceSweeps:
    """One loop's timers that sweep closing leases when they expire (see the module)."""

    def __init__(
        self,
        submit: Callable[[Iterable[Change]], Awaitable[None]],
        *,
        limit: int,
        max_sweeps: int,
    ) -> None:
        self._submit = submit
        self._limit = limit
        self._max_sweeps = max_sweeps
        #: Bucket number -> the task that sweeps at its end; only tasks not yet woken.
        self._timers: dict[int, asyncio.Task[None]] = {}
        #: Bucket number -> the user keys whose closing lease expires within it.
        self._users: dict[int, set[str]] = {}
        #: Every task not yet ended, woken or not (what :meth:`stop` cancels).
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """How many sweeps are scheduled or under way."""
        return len(self._tasks)

    def schedule(self, user_key: str, grace: float) -> None:
        """Sweep just after a closing lease of ``grace`` seconds, added now, expires."""
        loop = asyncio.get_running_loop()
        bucket = math.ceil((loop.time() + grace + MARGIN) / BUCKET)
        self._users.setdefault(bucket, set()).add(user_key)
        if bucket in self._timers:
            return
        task = loop.create_task(self._run(bucket), name="presence grace sweep")
        self._timers[bucket] = task
        self._tasks.add(task)
        # The task refers to its loop: once it ends (or the loop shuts down and cancels
        # it), let go of it, so that the loop and its runtime can be freed.
        task.add_done_callback(lambda done: self._forget(bucket, done))

    def _forget(self, bucket: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._timers.get(bucket) is task:  # cancelled before it woke
            del self._timers[bucket]
            self._users.pop(bucket, None)

    async def stop(self) -> None:
        """Cancel every scheduled sweep (the beat sweeps what they would have)."""
        await cancel_and_wait(self._tasks)
        self._timers.clear()
        self._users.clear()

    async def _run(self, bucket: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, bucket * BUCKET - loop.time()))
        # Woken: a close scheduled into this bucket from now on gets a task of its own.
        del self._timers[bucket]
        users = self._users.pop(bucket, set())
        try:
            # Shielded: once the backend removed leases, their OFFLINE changes must reach
            # the batcher even if stop() cancels this task meanwhile.
            users -= await asyncio.shield(self._sweep())
            if users:
                # Not expired yet on the backend's clock, or taken offline elsewhere (by
                # another server's sweep, or a reconnect): look once more.
                await asyncio.sleep(RETRY_AFTER)
                await asyncio.shield(self._sweep())
        except Exception:
            # The backend or the DB is down: the beat sweeps these leases when it can.
            logger.exception(
                "A sweep at the end of a grace period failed; the beat sweeps later",
                extra={"server": SERVER_ID},
            )

    async def _sweep(self) -> set[str]:
        """Sweep every expired lease, submit the OFFLINE changes; the users taken offline."""
        backend = get_backend()
        offline: list[Change] = []
        removed = 0
        for _ in range(self._max_sweeps):
            result = await backend.sweep(limit=self._limit)  # atomic; no lock: lock_ttl=0
            removed += result.removed
            offline += result.changes
            if not result.more and result.removed < self._limit:
                break
        metrics.increment("sweeps")
        if removed:
            metrics.increment("connections_swept", removed)
            logger.debug(
                "Swept %d expired connections at the end of a grace period; %d users went offline",
                removed,
                len(offline),
                extra={"server": SERVER_ID, "removed": removed, "offline": len(offline)},
            )
        await self._submit(offline)
        return {change.user_id for change in offline}
