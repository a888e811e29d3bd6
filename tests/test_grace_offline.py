"""A clean close takes the user offline at the end of the grace period, not at the beat.

With a short ``OFFLINE_GRACE_PERIOD`` and a ``HEARTBEAT_INTERVAL`` far longer than the
tests, no beat sweeps anything here: every OFFLINE below comes from the sweep the runtime
schedules when a closing lease expires (``grace_sweeps.py``). On both shipped backends.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.backends import get_backend
from django_presence.ids import new_connection_id
from django_presence.runtime import get_runtime
from django_presence.services import user_online_service
from django_presence.signals import user_offline, user_online

from .test_mixin import TrackedEchoConsumer, app
from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)

GRACE = 0.5
INTERVAL = 30.0  # no beat runs during a test


class Timeline:
    """``(kind, user key, time.monotonic())`` of every presence signal, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str, float]] = []

    def _online(self, sender: Any, user_id: Any, **kwargs: Any) -> None:
        with self._lock:
            self.events.append(("online", str(user_id), time.monotonic()))

    def _offline(self, sender: Any, user_id: Any, **kwargs: Any) -> None:
        with self._lock:
            self.events.append(("offline", str(user_id), time.monotonic()))

    def of(self, user_key: str) -> list[str]:
        with self._lock:
            return [kind for kind, key, _ in self.events if key == user_key]

    def offline_at(self, user_key: str) -> float | None:
        with self._lock:
            times = [t for kind, key, t in self.events if kind == "offline" and key == user_key]
        return times[0] if times else None

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(1 for k, _, _ in self.events if k == kind)


@pytest.fixture
def timeline() -> Iterator[Timeline]:
    log = Timeline()
    user_online.connect(log._online, weak=False)
    user_offline.connect(log._offline, weak=False)
    yield log
    user_online.disconnect(log._online)
    user_offline.disconnect(log._offline)


@pytest.fixture
async def short_grace(presence: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    settings_dict = {
        **presence,
        "OFFLINE_GRACE_PERIOD": GRACE,
        "HEARTBEAT_INTERVAL": INTERVAL,
        "CONNECTION_TTL": 3 * INTERVAL,
    }
    with override_settings(DJANGO_PRESENCE=settings_dict):
        try:
            yield settings_dict
        finally:
            await get_runtime().stop()
            await get_backend().aclose()


async def connect(user_key: str) -> str:
    """What the consumer mixin does on accept: track, then register."""
    cid = new_connection_id()
    get_runtime().track_connection(user_key, cid)
    await user_online_service.aadd_user_connection(user_key, cid)
    return cid


async def close(user_key: str, cid: str) -> float:
    """What the mixin does when the consumer ends; return when the close began."""
    closed_at = time.monotonic()
    get_runtime().untrack_connection(cid)
    await user_online_service.aremove_user_connection(user_key, cid)
    return closed_at


async def wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


async def test_a_clean_close_goes_offline_at_the_end_of_the_grace_period(
    short_grace: dict[str, Any], timeline: Timeline
) -> None:
    user = await get_user_model().objects.acreate(username="alice")
    key = str(user.pk)
    cid = await connect(key)
    closed_at = await close(key, cid)
    assert await user_online_service.ais_user_online(key)  # within the grace period

    await wait_for(lambda: timeline.offline_at(key) is not None, GRACE + 3)
    offline_at = timeline.offline_at(key)
    assert offline_at is not None, "not offline within grace + 3 s"
    delay = offline_at - closed_at
    assert GRACE <= delay <= GRACE + 1, delay
    assert not await user_online_service.ais_user_online(key)
    await user.arefresh_from_db()
    assert user.is_online is False
    await asyncio.sleep(0.7)  # the retry, if any, announces nothing more
    assert timeline.of(key) == ["online", "offline"]


async def test_a_socket_closed_cleanly_goes_offline_at_the_end_of_the_grace_period(
    short_grace: dict[str, Any], timeline: Timeline
) -> None:
    """The same through the consumer mixin, as a browser tab closing."""
    user = await get_user_model().objects.acreate(username="bob")
    tab = WebsocketCommunicator(app(TrackedEchoConsumer), f"/ws/?token={make_token(user.pk)}")
    assert (await tab.connect())[0]
    closed_at = time.monotonic()
    await tab.disconnect()
    await wait_for(lambda: timeline.offline_at(str(user.pk)) is not None, GRACE + 3)
    offline_at = timeline.offline_at(str(user.pk))
    assert offline_at is not None
    assert offline_at - closed_at <= GRACE + 1
    assert timeline.of(str(user.pk)) == ["online", "offline"]


@pytest.mark.parametrize("where", ["this server", "another server"])
async def test_a_reconnect_within_the_grace_period_causes_no_transition(
    short_grace: dict[str, Any], timeline: Timeline, where: str
) -> None:
    key = "4242"
    with override_settings(DJANGO_PRESENCE={**short_grace, "SYNC_USER_MODEL": False}):
        cid = await connect(key)
        await close(key, cid)
        await asyncio.sleep(GRACE / 2)
        if where == "this server":
            await connect(key)
        else:  # registered by another process: straight into the shared backend
            change = await get_backend().add_connection(key, "elsewhere", ttl=90, server="b")
            assert not change.changed
        await asyncio.sleep(GRACE + 1.5)  # past the sweep and its retry
        assert timeline.of(key) == ["online"]
        assert await user_online_service.ais_user_online(key)


async def test_closing_twice_within_the_grace_period_goes_offline_once(
    short_grace: dict[str, Any], timeline: Timeline
) -> None:
    """Close, reconnect, close again: one OFFLINE, at the end of the second grace."""
    key = "4343"
    with override_settings(DJANGO_PRESENCE={**short_grace, "SYNC_USER_MODEL": False}):
        await close(key, await connect(key))
        await asyncio.sleep(GRACE / 2)
        closed_at = await close(key, await connect(key))
        await wait_for(lambda: timeline.offline_at(key) is not None, GRACE + 3)
        offline_at = timeline.offline_at(key)
        assert offline_at is not None
        assert GRACE <= offline_at - closed_at <= GRACE + 1
        await asyncio.sleep(1.0)
        assert timeline.of(key) == ["online", "offline"]


async def test_many_concurrent_closes_go_offline_exactly_once_each(
    short_grace: dict[str, Any], timeline: Timeline
) -> None:
    """200 users close at once while another server sweeps in a loop: 200 OFFLINEs."""
    count = 200
    keys = [str(50_000 + i) for i in range(count)]
    with override_settings(DJANGO_PRESENCE={**short_grace, "SYNC_USER_MODEL": False}):
        cids = await asyncio.gather(*(connect(key) for key in keys))
        assert timeline.count("online") == count
        racing = True

        async def other_server_sweeps() -> None:
            # Another server's beat, unlocked and as often as it can: it races ours.
            while racing:
                await user_online_service.asweep()
                await asyncio.sleep(0.02)

        racer = asyncio.ensure_future(other_server_sweeps())
        try:
            started = time.monotonic()
            await asyncio.gather(*(close(key, cid) for key, cid in zip(keys, cids, strict=True)))
            await wait_for(lambda: timeline.count("offline") >= count, GRACE + 5)
            took = time.monotonic() - started
        finally:
            racing = False
            await racer
        assert timeline.count("offline") == count, f"{timeline.count('offline')} after {took} s"
        print(f"\n{count} closes racing another sweeper: all offline {took:.2f} s after")
        assert took <= GRACE + 3, took
        await asyncio.sleep(1.0)  # no duplicate comes later
        assert timeline.count("offline") == count
        assert all(timeline.of(key) == ["online", "offline"] for key in keys)
        assert await get_backend().online_user_ids(keys) == set()


async def test_the_grace_sweeps_alone_take_many_concurrent_closes_offline(
    short_grace: dict[str, Any], timeline: Timeline
) -> None:
    """The same 200 closes with no other sweeper: each offline within grace + 1 s."""
    count = 200
    keys = [str(60_000 + i) for i in range(count)]
    with override_settings(DJANGO_PRESENCE={**short_grace, "SYNC_USER_MODEL": False}):
        cids = await asyncio.gather(*(connect(key) for key in keys))
        closed = await asyncio.gather(
            *(close(key, cid) for key, cid in zip(keys, cids, strict=True))
        )
        await wait_for(lambda: timeline.count("offline") >= count, GRACE + 5)
        delays = []
        for key, closed_at in zip(keys, closed, strict=True):
            offline_at = timeline.offline_at(key)
            assert offline_at is not None, key
            delays.append(offline_at - closed_at)
        delays.sort()
        low, high = delays[0], delays[-1]
        print(f"\n{count} closes, grace {GRACE} s: close -> offline {low:.2f} to {high:.2f} s")
        assert max(delays) <= GRACE + 1, max(delays)
        await asyncio.sleep(1.0)
        assert timeline.count("offline") == count


async def test_stop_cancels_the_scheduled_sweeps(
    short_grace: dict[str, Any], timeline: Timeline
) -> None:
    key = "4444"
    with override_settings(DJANGO_PRESENCE={**short_grace, "SYNC_USER_MODEL": False}):
        await close(key, await connect(key))
        runtime = get_runtime()
        assert len(runtime.grace_sweeps) == 1
        await runtime.stop()
        assert len(runtime.grace_sweeps) == 0
        await asyncio.sleep(GRACE + 1)
        # Nothing swept it: the lease expired, and the next beat (any server's) announces it.
        assert timeline.of(key) == ["online"]
        await user_online_service.asweep()
        assert timeline.of(key) == ["online", "offline"]


def test_a_finished_loop_with_a_sweep_still_scheduled_is_freed(presence: dict[str, Any]) -> None:
    refs: list[weakref.ref[Any]] = []
    settings_dict = {**presence, "OFFLINE_GRACE_PERIOD": 30, "SYNC_USER_MODEL": False}

    async def close_and_stop_serving() -> None:
        await close("4545", await connect("4545"))
        assert len(get_runtime().grace_sweeps) == 1
        refs.append(weakref.ref(asyncio.get_running_loop()))
        refs.append(weakref.ref(get_runtime()))
        await get_backend().aclose()

    with override_settings(DJANGO_PRESENCE=settings_dict):
        asyncio.run(close_and_stop_serving())  # cancels the sweep's task, closes the loop
    # On Django 4.2 the signals are sent through sync_to_async, whose one executor thread
    # keeps the last loop that used it in a thread-local until another loop does: that
    # is asgiref's, not a leak of ours, so let another loop take its place.
    asyncio.run(sync_to_async(int)())
    gc.collect()

    assert [ref() for ref in refs] == [None, None]
