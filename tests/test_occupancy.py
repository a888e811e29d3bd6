"""Group occupancy: ``group_occupied`` and ``group_emptied``, each once, after the grace period.

Through the group presence service (what the ``ws/user/`` consumer calls) and through real
sockets, on both shipped backends. ``HEARTBEAT_INTERVAL`` is far longer than the tests, so
no beat runs unless a test calls one; every emptying below is settled by the timer the
runtime schedules (``occupancy.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_presence import occupancy
from django_presence.backends import MemberChange, get_backend
from django_presence.runtime import get_runtime
from django_presence.services import group_presence_service
from django_presence.signals import group_emptied, group_occupied

from .test_user_consumer import open_socket, receive_type, request

GRACE = 0.3
INTERVAL = 30.0  # no beat runs during a test
G = "waiting-room-1"


class Events:
    """``(kind, group, time.monotonic())`` of every occupancy signal, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str, float]] = []

    def _occupied(self, sender: Any, group: str, **kwargs: Any) -> None:
        assert sender is MemberChange
        with self._lock:
            self.events.append(("occupied", group, time.monotonic()))

    def _emptied(self, sender: Any, group: str, **kwargs: Any) -> None:
        assert sender is MemberChange
        with self._lock:
            self.events.append(("emptied", group, time.monotonic()))

    def of(self, group: str = G) -> list[str]:
        with self._lock:
            return [kind for kind, g, _ in self.events if g == group]

    def at(self, kind: str, group: str = G) -> float | None:
        with self._lock:
            times = [t for k, g, t in self.events if k == kind and g == group]
        return times[-1] if times else None


@pytest.fixture
def events() -> Iterator[Events]:
    log = Events()
    group_occupied.connect(log._occupied, weak=False)
    group_emptied.connect(log._emptied, weak=False)
    yield log
    group_occupied.disconnect(log._occupied)
    group_emptied.disconnect(log._emptied)


@pytest.fixture
async def short_grace(presence: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    settings_dict = {
        **presence,
        "OFFLINE_GRACE_PERIOD": GRACE,
        "HEARTBEAT_INTERVAL": INTERVAL,
        "CONNECTION_TTL": 3 * INTERVAL,
        "SYNC_USER_MODEL": False,
    }
    with override_settings(DJANGO_PRESENCE=settings_dict):
        try:
            yield settings_dict
        finally:
            await get_runtime().stop()
            await get_backend().aclose()


async def wait_for(events: Events, wanted: list[str], timeout: float = GRACE + 2) -> None:
    """Wait (bounded) until the group's events are ``wanted``."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01) + 1):
        if events.of() == wanted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert events.of() == wanted


async def test_occupied_then_emptied_after_the_grace_period_once_each(
    short_grace: dict[str, Any], events: Events
) -> None:
    await group_presence_service.ajoin(G, "1", "m1")
    assert events.of() == ["occupied"]
    await group_presence_service.ajoin(G, "2", "m2")
    await group_presence_service.ajoin(G, "1", "m1-tab-2")
    await group_presence_service.aleave(G, "1", "m1")
    await group_presence_service.aleave(G, "1", "m1-tab-2")
    assert events.of() == ["occupied"]

    await group_presence_service.aleave(G, "2", "m2")
    left_at = time.monotonic()
    await asyncio.sleep(GRACE / 2)
    assert events.of() == ["occupied"]  # not before the grace period
    await wait_for(events, ["occupied", "emptied"])
    emptied_at = events.at("emptied")
    assert emptied_at is not None
    assert GRACE <= emptied_at - left_at <= GRACE + 1
    await asyncio.sleep(GRACE)
    assert events.of() == ["occupied", "emptied"]
    assert len(get_runtime().group_settles) == 0  # nothing left behind

    await group_presence_service.ajoin(G, "3", "m3")  # a new occupancy
    assert events.of() == ["occupied", "emptied", "occupied"]


async def test_leaving_and_joining_again_within_the_grace_period_announces_nothing(
    short_grace: dict[str, Any], events: Events
) -> None:
    await group_presence_service.ajoin(G, "1", "m1")
    await group_presence_service.aleave(G, "1", "m1")
    await asyncio.sleep(GRACE / 2)
    await group_presence_service.ajoin(G, "1", "m1-again")  # a reload of the page
    await asyncio.sleep(GRACE + 0.2)

    assert events.of() == ["occupied"]
    assert await group_presence_service.aget_members(G) == (["1"], 1)


async def test_emptying_twice_within_the_grace_period_settles_after_the_last(
    short_grace: dict[str, Any], events: Events
) -> None:
    await group_presence_service.ajoin(G, "1", "m1")
    await group_presence_service.aleave(G, "1", "m1")
    await asyncio.sleep(GRACE / 2)
    await group_presence_service.ajoin(G, "2", "m2")
    await group_presence_service.aleave(G, "2", "m2")
    left_at = time.monotonic()

    await wait_for(events, ["occupied", "emptied"])
    emptied_at = events.at("emptied")
    assert emptied_at is not None
    assert emptied_at - left_at >= GRACE
    await asyncio.sleep(GRACE)
    assert events.of() == ["occupied", "emptied"]


async def test_concurrent_leaves_of_the_last_two_members_empty_once(
    short_grace: dict[str, Any], events: Events
) -> None:
    await asyncio.gather(*(group_presence_service.ajoin(G, str(i), f"m{i}") for i in range(10)))
    assert events.of() == ["occupied"]
    for i in range(8):
        await group_presence_service.aleave(G, str(i), f"m{i}")

    await asyncio.gather(
        group_presence_service.aleave(G, "8", "m8"), group_presence_service.aleave(G, "9", "m9")
    )

    await wait_for(events, ["occupied", "emptied"])
    await asyncio.sleep(GRACE)
    assert events.of() == ["occupied", "emptied"]


async def test_settles_racing_across_servers_announce_once(
    short_grace: dict[str, Any], events: Events
) -> None:
    """Several processes settling the same emptying: the backend hands the flag to one."""
    await group_presence_service.ajoin(G, "1", "m1")
    await get_backend().room_leave(G, "1", "m1")  # left through another server

    await asyncio.gather(*(occupancy.settle(G) for _ in range(10)))

    assert events.of() == ["occupied", "emptied"]


async def test_a_crashed_member_swept_empties_the_group_once(
    short_grace: dict[str, Any], events: Events
) -> None:
    """The member of a crashed server expires; a server still sweeping the group announces."""
    runtime = get_runtime()
    # Joined through a server that then crashed: its lease is never renewed.
    crashed = await get_backend().room_join(G, "9", "crashed", ttl=0.2)
    await runtime.member_changed(crashed)
    assert events.of() == ["occupied"]
    # This server still holds a membership of the group, which the backend lost (a restart):
    # its beat sweeps the group.
    runtime.track_membership(G, "1", "lost")
    await asyncio.sleep(0.3)

    await runtime.beat()
    swept_at = time.monotonic()
    await runtime.beat()  # a second sweep finds nothing more

    await wait_for(events, ["occupied", "emptied"])
    emptied_at = events.at("emptied")
    assert emptied_at is not None
    assert emptied_at - swept_at >= GRACE - 0.05
    await asyncio.sleep(GRACE)
    assert events.of() == ["occupied", "emptied"]


async def test_stop_cancels_pending_settles(short_grace: dict[str, Any], events: Events) -> None:
    runtime = get_runtime()
    await group_presence_service.ajoin(G, "1", "m1")
    await group_presence_service.aleave(G, "1", "m1")
    assert len(runtime.group_settles) == 1

    await runtime.stop()

    assert len(runtime.group_settles) == 0
    await asyncio.sleep(GRACE + 0.2)
    assert events.of() == ["occupied"]


async def test_no_grace_period_settles_at_once(
    short_grace: dict[str, Any], events: Events
) -> None:
    with override_settings(DJANGO_PRESENCE={**short_grace, "OFFLINE_GRACE_PERIOD": 0}):
        await group_presence_service.ajoin(G, "1", "m1")
        await group_presence_service.aleave(G, "1", "m1")

        assert events.of() == ["occupied", "emptied"]
        assert len(get_runtime().group_settles) == 0


async def test_a_failing_receiver_is_logged_and_the_others_still_run(
    short_grace: dict[str, Any], events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, group: str, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    group_occupied.connect(broken, weak=False)
    try:
        await group_presence_service.ajoin(G, "1", "m1")
    finally:
        group_occupied.disconnect(broken)

    assert events.of() == ["occupied"]
    assert f"failed for group {G!r}" in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_a_waiting_room_through_sockets(short_grace: dict[str, Any], events: Events) -> None:
    """Two patients in a waiting room; the frames clients see are unchanged."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    alice = await model.objects.acreate(username="alice")
    bob = await model.objects.acreate(username="bob")
    a, b = await open_socket(alice), await open_socket(bob)
    await request(a, "join_group", {"group": G})
    await receive_type(a, "group_joined")
    assert events.of() == ["occupied"]
    await request(b, "join_group", {"group": G})
    await receive_type(b, "group_joined")
    assert (await receive_type(a, "group_presence"))["data"]["joined"] is True

    await a.disconnect()
    await b.disconnect()

    await wait_for(events, ["occupied", "emptied"])
    await asyncio.sleep(GRACE)
    assert events.of() == ["occupied", "emptied"]


async def test_nothing_is_stored_while_nobody_listens(short_grace: dict[str, Any]) -> None:
    await group_presence_service.ajoin(G, "1", "m1")
    await group_presence_service.aleave(G, "1", "m1")

    assert len(get_runtime().group_settles) == 0
    assert not await get_backend().room_settle(G)  # no flag was set
