"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from django.test import override_settings

from django_presence.backends import get_backend, reset_backend

from .servers import ensure_redis_url

_REDIS_SERVER = None


def pytest_configure(config: pytest.Config) -> None:
    global _REDIS_SERVER
    url, _REDIS_SERVER = ensure_redis_url()
    os.environ["REDIS_URL"] = url
    with redis.Redis.from_url(url) as client:
        client.ping()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _REDIS_SERVER is not None:
        _REDIS_SERVER.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis server the tests use (from REDIS_URL or started by the suite)."""
    return os.environ["REDIS_URL"]


def presence_settings_for(backend: str, redis_url: str, **overrides: Any) -> dict[str, Any]:
    """A DJANGO_PRESENCE dict for ``backend`` ("memory" or "redis"), isolated per call."""
    from django.conf import settings

    base = dict(settings.DJANGO_PRESENCE)
    if backend == "redis":
        base["BACKEND"] = "django_presence.backends.redis.RedisBackend"
        base["REDIS_URL"] = redis_url
        base["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    else:
        base["BACKEND"] = "django_presence.backends.memory.MemoryBackend"
    base.update(overrides)
    return base


@pytest.fixture(params=["memory", "redis"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per shipped backend."""
    return str(request.param)


@pytest.fixture
def presence(backend_name: str, redis_url: str) -> Iterator[dict[str, Any]]:
    """Configure the package for ``backend_name`` with private Redis keys.

    Yields the settings dict; tests may update it through ``override_settings``.
    """
    settings_dict = presence_settings_for(backend_name, redis_url)
    with override_settings(DJANGO_PRESENCE=settings_dict):
        yield settings_dict
        if backend_name == "redis":
            with redis.Redis.from_url(redis_url) as client:
                keys = list(client.scan_iter(match="{" + settings_dict["KEY_PREFIX"] + "}:*"))
                if keys:
                    client.delete(*keys)
    reset_backend()


@pytest.fixture
async def backend(presence: dict[str, Any]) -> AsyncIterator[Any]:
    """The configured backend instance, closed after the test."""
    instance = get_backend()
    yield instance
    await instance.aclose()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain sync client of the test Redis server, for looking at keys and stats."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


class SignalLog:
    """Every ``user_online`` / ``user_offline`` signal sent while it is connected.

    Thread-safe: signals may be sent from several threads and event loops at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, Any, int]] = []  # (kind, user_id, seq), arrival order

    def _online(self, sender: Any, user_id: Any, seq: int, **kwargs: Any) -> None:
        with self._lock:
            self.events.append(("online", user_id, seq))

    def _offline(self, sender: Any, user_id: Any, seq: int, **kwargs: Any) -> None:
        with self._lock:
            self.events.append(("offline", user_id, seq))

    def of(self, user_id: Any) -> list[str]:
        """Kinds of the signals of ``user_id``, ordered by seq."""
        with self._lock:
            events = sorted((e for e in self.events if e[1] == user_id), key=lambda e: e[2])
        return [kind for kind, _, _ in events]

    def kinds(self) -> list[str]:
        """Kinds of every signal, in arrival order."""
        with self._lock:
            return [kind for kind, _, _ in self.events]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._lock:
            self.events.clear()


@pytest.fixture
def signal_log() -> Iterator[SignalLog]:
    """Records the presence signals sent during the test."""
    from django_presence.signals import user_offline, user_online

    log = SignalLog()
    user_online.connect(log._online, weak=False)
    user_offline.connect(log._offline, weak=False)
    yield log
    user_online.disconnect(log._online)
    user_offline.disconnect(log._offline)
