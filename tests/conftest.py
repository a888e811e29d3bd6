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


@pytest.fixture(scope="session", autouse=True)
def _no_permission_rows_after_each_flush() -> None:
    """Keep ``post_migrate`` from recreating content types and permissions in every test.

    A transactional test (most of this suite) ends with ``flush``, whose ``post_migrate``
    rebuilt every app's content types and permissions, for rows no test reads: about 5%
    of the CPU of the consumer, admin, messaging and delivery tests. The test that needs
    a permission creates it (``test_admin``); content types are made on first use.
    """
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes
    from django.db.models.signals import post_migrate

    post_migrate.disconnect(
        create_permissions, dispatch_uid="django.contrib.auth.management.create_permissions"
    )
    post_migrate.disconnect(create_contenttypes)


@pytest.fixture(autouse=True)
def _close_sync_thread_connections() -> Iterator[None]:
    """Close the database connections of asgiref's shared sync thread after each test.

    Django's async ORM methods (``acreate``, ``arefresh_from_db``, ...) run in that one
    thread, and nothing closes its connection; on PostgreSQL it would keep the test
    database from being dropped at the end of the session. Submitted to the thread's
    executor directly, so no event loop is needed (the browser tests have one running).
    """
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


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


def redis_channel_layer_config(redis_url: str) -> dict[str, Any]:
    """A channels_redis layer on the test Redis, with its own key prefix."""
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": redis_url, "socket_timeout": 30}],
            "prefix": f"asgi-{uuid.uuid4().hex[:8]}",
        },
    }


@pytest.fixture
def redis_layer(presence: dict[str, Any], redis_url: str) -> Iterator[None]:
    """Make a channels_redis layer the default, so sockets and sync callers share it."""
    from channels.layers import channel_layers

    with override_settings(CHANNEL_LAYERS={"default": redis_channel_layer_config(redis_url)}):
        yield
    channel_layers.backends.clear()


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


class CommandCounter:
    """The commands clients sent to a private Redis server, seen through ``MONITOR``.

    Commands run inside Lua scripts are left out: what is counted is what went over the
    network, so the counts are exactly the round trips the package made.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = redis.Redis.from_url(url)
        self._seen: list[tuple[str, str]] = []  # (command name, whole command line)
        self._lock = threading.Lock()
        self._marks = 0
        self._mark_seen = threading.Condition(self._lock)
        self._last_mark = ""
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            entry = self._monitor.next_command()
            if entry.get("client_type") == "lua":
                continue
            command = str(entry["command"])
            name = command.split(" ", 1)[0].lower()
            with self._lock:
                if name == "echo" and "presence-test-mark-" in command:
                    self._last_mark = command.split("presence-test-mark-", 1)[1]
                    self._mark_seen.notify_all()
                    if self._last_mark.startswith("stop"):
                        return
                    continue
                self._seen.append((name, command))

    def _sync(self, stop: bool = False) -> None:
        """Wait until the monitor has seen every command sent before this call."""
        with self._lock:
            self._marks += 1
            mark = f"{'stop' if stop else ''}{self._marks}"
        self._client.echo(f"presence-test-mark-{mark}")
        with self._lock:
            if not self._mark_seen.wait_for(lambda: self._last_mark == mark, timeout=30):
                raise TimeoutError("MONITOR did not show a command within 30 s")

    def reset(self) -> None:
        """Start counting from zero."""
        self._sync()
        with self._lock:
            self._seen.clear()

    def counts(self, key_prefix: str | None = None) -> dict[str, int]:
        """How many of each command clients sent since :meth:`reset`.

        With ``key_prefix``, only commands naming a key under the hash tag of that prefix
        are counted, so that nothing else using the server (a server thread of another
        test still running) can change the counts.
        """
        self._sync()
        tag = "{" + key_prefix + "}" if key_prefix is not None else ""
        with self._lock:
            counts: dict[str, int] = {}
            for name, command in self._seen:
                if tag in command:
                    counts[name] = counts.get(name, 0) + 1
            return counts

    def close(self) -> None:
        """Stop monitoring and close the counter's connections."""
        self._sync(stop=True)
        self._thread.join(30)
        self._monitor.__exit__(None, None, None)
        self._client.close()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[str]:
    """URL of a Redis server of this test session alone, for counting commands."""
    from .servers import RedisProcess

    server = RedisProcess().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def command_counter(private_redis: str) -> Iterator[CommandCounter]:
    """A :class:`CommandCounter` of :func:`private_redis`, reset, with an empty server."""
    with redis.Redis.from_url(private_redis) as client:
        client.flushall()
    counter = CommandCounter(private_redis)
    yield counter
    counter.close()
