"""The backend contract, continued: availability (states, devices, activities, status).

Like ``test_backend_contract.py``, every test runs against every shipped backend (memory,
and Redis on a real server), and ``tests/faults/test_contract_many_servers.py`` runs them
again on Redis Sentinel and Redis Cluster.

Times are the backend's own (Redis ``TIME``, the memory backend's monotonic clock): the
tests compare them with :meth:`BasePresenceBackend.now` only, and wait for idleness and
expiries with short real delays (``IDLE``) and polling sweeps, never with fixed sleeps
that a slow machine could outrun.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from django_presence.backends import BasePresenceBackend, Change, Transition
from django_presence.backends.base import Availability, ConnectionData, PublicPresence
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend

from .test_backend_contract import eventually, like
from .test_backend_contract_rooms import ODD_IDS

ONLINE, OFFLINE, NONE = Transition.ONLINE, Transition.OFFLINE, Transition.NONE

# Idle time after which a user turns away, and status lifetimes: short, so that the waits
# for them keep the file fast; long ones (LONG) for what must not happen during a test.
IDLE = 0.3
LONG = 30.0
# How long the waits for a sweep to notice something may take (bounded polling).
WAIT = 5.0

WEB = ConnectionData(device="web")
MOBILE = ConnectionData(device="mobile")


def seen(
    state: str, devices: Sequence[str] = (), activities: Sequence[str] = (), text: str = ""
) -> PublicPresence:
    """A public presence, written short."""
    return PublicPresence(state, tuple(devices), tuple(activities), text)


HIDDEN = seen("offline")


async def availability_of(backend: BasePresenceBackend, user_id: str) -> Availability:
    result = await backend.availability([user_id])
    assert list(result) == [user_id]
    return result[user_id]


async def sweep_for(
    backend: BasePresenceBackend,
    done: Callable[[list[Change]], bool],
    what: str,
    *,
    limit: int = 1000,
) -> list[Change]:
    """Sweep until ``done(changes so far)``; return every change the sweeps produced."""
    changes: list[Change] = []

    async def enough() -> bool:
        changes.extend((await backend.sweep(limit=limit)).changes)
        return done(changes)

    await eventually(enough, timeout=WAIT, what=what)
    return changes


async def wait_until(backend: BasePresenceBackend, moment: float) -> None:
    """Wait until the backend's clock reads ``moment`` (polling, bounded)."""

    async def reached() -> bool:
        return await backend.now() >= moment

    await eventually(reached, timeout=WAIT, what=f"backend time {moment}")


def states_of(changes: Sequence[Change], user_id: str) -> list[str]:
    """The public states the presence changes of ``user_id`` announced, in seq order."""
    mine = sorted((c for c in changes if c.user_id == user_id), key=lambda c: c.seq)
    return [c.presence.state for c in mine if c.presence is not None]


def assert_presence_change(change: Change, presence: PublicPresence, after: int) -> int:
    """``change`` announces ``presence`` with a seq above ``after``; return that seq."""
    assert change.presence == presence
    assert change.seq > after
    assert change.announces
    return change.seq


def assert_silent(change: Change) -> None:
    """``change`` announces nothing: no transition, no presence change, no seq."""
    assert change.transition is NONE
    assert change.presence is None
    assert change.seq == 0
    assert not change.announces


# -- public state ------------------------------------------------------------------------------


async def test_an_unknown_user_is_offline_and_available(backend: BasePresenceBackend) -> None:
    nobody = await availability_of(backend, "nobody")

    assert nobody == Availability(
        user_id="nobody",
        online=False,
        seq=0,
        presence=seen("offline"),
        state="offline",
        status="available",
        text="",
        status_expires_at=None,
        last_active=None,
        connections={},
    )


async def test_a_connected_user_is_online_with_their_device(backend: BasePresenceBackend) -> None:
    change = await backend.add_connection("1", "a", ttl=LONG, data=WEB)

    assert change.transition is ONLINE
    assert not change.hidden
    assert_presence_change(change, seen("online", ["web"]), 0)
    me = await availability_of(backend, "1")
    assert (me.online, me.seq, me.presence, me.state, me.status) == (
        True,
        change.seq,
        seen("online", ["web"]),
        "online",
        "available",
    )
    assert me.connections == {"a": WEB}


async def test_a_connection_without_data_shows_no_device(backend: BasePresenceBackend) -> None:
    change = await backend.add_connection("1", "a", ttl=LONG)

    assert change.presence == seen("online")
    me = await availability_of(backend, "1")
    assert me.presence == seen("online")


async def test_availability_lists_every_connection_with_its_data(
    backend: BasePresenceBackend,
) -> None:
    """``connections`` maps every connection id, open and closing, to its data."""
    await backend.add_connection("1", "a", ttl=LONG)
    await backend.add_connection("1", "b", ttl=LONG, data=WEB)
    await backend.add_connection("2", "c", ttl=LONG)
    await backend.remove_connection("2", "c", grace=LONG)  # closing

    found = await backend.availability(["1", "2"])

    assert found["1"].connections == {"a": ConnectionData(), "b": WEB}
    assert found["2"].connections == {"c": ConnectionData()}


async def test_busy_shows_busy_and_back_to_available_shows_online(
    backend: BasePresenceBackend,
) -> None:
    online = await backend.add_connection("1", "a", ttl=LONG, data=WEB)

    busy = await backend.set_status("1", "busy", text="In a meeting")
    assert busy.transition is NONE
    seq = assert_presence_change(busy, seen("busy", ["web"], text="In a meeting"), online.seq)
    me = await availability_of(backend, "1")
    assert (me.presence, me.state, me.status, me.text, me.seq) == (
        seen("busy", ["web"], text="In a meeting"),
        "busy",
        "busy",
        "In a meeting",
        seq,
    )

    available = await backend.set_status("1", "available")
    assert_presence_change(available, seen("online", ["web"]), seq)
    me = await availability_of(backend, "1")
    assert (me.presence, me.state, me.status, me.text) == (
        seen("online", ["web"]),
        "online",
        "available",
        "",
    )


async def test_the_status_text_is_public_and_announced_when_it_changes(
    backend: BasePresenceBackend,
) -> None:
    online = await backend.add_connection("1", "a", ttl=LONG, data=WEB)

    wfh = await backend.set_status("1", "available", text="Working from home")
    seq = assert_presence_change(
        wfh, seen("online", ["web"], text="Working from home"), online.seq
    )
    assert_silent(await backend.set_status("1", "available", text="Working from home"))
    busy = await backend.set_status("1", "busy", text="Working from home")
    seq = assert_presence_change(busy, seen("busy", ["web"], text="Working from home"), seq)
    lunch = await backend.set_status("1", "busy", text="Lunch")
    seq = assert_presence_change(lunch, seen("busy", ["web"], text="Lunch"), seq)
    cleared = await backend.set_status("1", "busy")
    assert_presence_change(cleared, seen("busy", ["web"]), seq)


async def test_an_invisible_user_shows_offline_but_sees_themselves_online(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=ConnectionData("web", "in_call"))
    await backend.add_connection("1", "b", ttl=LONG, data=MOBILE)
    before = await availability_of(backend, "1")

    hide = await backend.set_status("1", "invisible", text="not here")

    assert hide.transition is NONE
    assert_presence_change(hide, HIDDEN, before.seq)
    me = await availability_of(backend, "1")
    assert me.online is True  # the server's truth
    assert me.presence == seen("offline")  # devices, activities and text hidden too
    assert (me.state, me.status, me.text) == ("online", "invisible", "not here")
    assert set(me.connections) == {"a", "b"}
    assert await backend.is_online("1")

    show = await backend.set_status("1", "available")
    assert_presence_change(show, seen("online", ["mobile", "web"], ["in_call"]), hide.seq)


async def test_an_invisible_user_connecting_and_leaving_is_hidden(
    backend: BasePresenceBackend,
) -> None:
    await backend.set_status("1", "invisible")

    online = await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    assert (online.transition, online.hidden, online.presence) == (ONLINE, True, None)
    assert online.seq > 0
    assert online.announces  # the transition is real: user_online and is_online hold
    second = await backend.add_connection("1", "b", ttl=LONG, data=MOBILE)
    assert_silent(second)
    data = await backend.set_connection_data("1", "a", ConnectionData("web", "in_call"))
    assert_silent(data)
    me = await availability_of(backend, "1")
    assert (me.online, me.presence, me.state) == (True, HIDDEN, "online")

    await backend.remove_connection("1", "b")
    offline = await backend.remove_connection("1", "a")
    assert (offline.transition, offline.hidden, offline.presence) == (OFFLINE, True, None)
    assert offline.seq > online.seq
    me = await availability_of(backend, "1")
    assert (me.online, me.presence, me.state, me.status) == (
        False,
        HIDDEN,
        "offline",
        "invisible",
    )


async def test_a_visible_transition_is_not_hidden(backend: BasePresenceBackend) -> None:
    online = await backend.add_connection("1", "a", ttl=LONG)
    offline = await backend.remove_connection("1", "a")

    assert (online.hidden, offline.hidden) == (False, False)
    assert offline.transition is OFFLINE
    assert_presence_change(offline, seen("offline"), online.seq)


# -- presence changes: one per real change, sharing the transitions' seq -----------------------


async def test_each_public_change_is_announced_once_with_a_new_seq(
    backend: BasePresenceBackend,
) -> None:
    seqs = [0]

    def announced(change: Change, presence: PublicPresence) -> None:
        seqs.append(assert_presence_change(change, presence, seqs[-1]))

    online = await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    assert online.transition is ONLINE
    announced(online, seen("online", ["web"]))
    assert_silent(await backend.add_connection("1", "b", ttl=LONG, data=WEB))
    announced(
        await backend.add_connection("1", "c", ttl=LONG, data=MOBILE),
        seen("online", ["mobile", "web"]),
    )
    in_call = ConnectionData("mobile", "in_call")
    announced(
        await backend.set_connection_data("1", "c", in_call),
        seen("online", ["mobile", "web"], ["in_call"]),
    )
    assert_silent(await backend.set_connection_data("1", "c", in_call))
    announced(await backend.set_status("1", "busy"), seen("busy", ["mobile", "web"], ["in_call"]))
    assert_silent(await backend.set_status("1", "busy"))
    announced(await backend.remove_connection("1", "c"), seen("busy", ["web"]))
    assert_silent(await backend.remove_connection("1", "b"))
    offline = await backend.remove_connection("1", "a")
    assert offline.transition is OFFLINE
    announced(offline, seen("offline"))

    assert (await availability_of(backend, "1")).seq == seqs[-1]
    # The transitions' seqs are the presence changes' seqs.
    assert (await backend.presence_snapshot(["1"]))["1"] == (False, offline.seq)


async def test_presence_seqs_and_transition_seqs_are_one_counter(
    backend: BasePresenceBackend,
) -> None:
    seqs = [(await backend.add_connection("1", "a", ttl=LONG, data=WEB)).seq]
    seqs.append((await backend.add_connection("2", "a", ttl=LONG)).seq)
    seqs.append((await backend.set_connection_data("1", "a", MOBILE)).seq)
    seqs.append((await backend.remove_connection("2", "a")).seq)
    seqs.append((await backend.set_status("1", "busy")).seq)
    seqs.append((await backend.add_connection("2", "b", ttl=LONG)).seq)

    assert all(s > 0 for s in seqs)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_data_and_keep_present_alone_change_nothing_public(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB, idle=LONG)
    before = await availability_of(backend, "1")

    payload = '{"page": "/inbox", "note": "ü€ \\"quoted\\""}'
    with_data = ConnectionData("web", data=payload)
    assert_silent(await backend.set_connection_data("1", "a", with_data))
    kept = ConnectionData("web", data=payload, keep_present=True)
    assert_silent(await backend.set_connection_data("1", "a", kept))

    me = await availability_of(backend, "1")
    assert me.connections == {"a": kept}
    assert (me.presence, me.seq) == (before.presence, before.seq)


# -- devices and activities across connections -------------------------------------------------


async def test_devices_and_activities_are_sorted_and_distinct(
    backend: BasePresenceBackend,
) -> None:
    datas = {
        "a": ConnectionData("web", "viewing:/b"),
        "b": ConnectionData("mobile", "in_call"),
        "c": ConnectionData("web", "viewing:/a"),
        "d": ConnectionData("desktop", "in_call"),
        "e": ConnectionData("", ""),
        "f": ConnectionData("mobile", ""),
    }
    for cid, data in datas.items():
        await backend.add_connection("1", cid, ttl=LONG, data=data)

    me = await availability_of(backend, "1")
    assert me.presence == seen(
        "online", ["desktop", "mobile", "web"], ["in_call", "viewing:/a", "viewing:/b"]
    )
    assert me.connections == datas


async def test_devices_and_activities_are_sorted_by_code_point(
    backend: BasePresenceBackend,
) -> None:
    """Python's order, whatever the locale of the store (Redis compares with strcoll)."""
    names = ["web", "Web", "a_b", "a-b", "ab", "Z", "é", "e", "10", "9"]
    for i, name in enumerate(names):
        await backend.add_connection("1", f"c{i}", ttl=LONG, data=ConnectionData(name, name))

    me = await availability_of(backend, "1")

    assert me.presence == seen("online", sorted(names), sorted(names))


async def test_data_is_updated_in_place_without_a_transition(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    await backend.add_connection("1", "b", ttl=LONG, data=WEB)
    [before] = [i for i in await backend.user_connections("1") if i.connection_id == "a"]

    change = await backend.set_connection_data("1", "a", ConnectionData("desktop", "in_call"))

    assert (change.user_id, change.transition) == ("1", NONE)
    assert change.presence == seen("online", ["desktop", "web"], ["in_call"])
    me = await availability_of(backend, "1")
    assert me.connections == {"a": ConnectionData("desktop", "in_call"), "b": WEB}
    assert me.seq == change.seq
    assert await backend.connection_count("1") == 2
    # Same lease: neither reopened nor shortened.
    [after] = [i for i in await backend.user_connections("1") if i.connection_id == "a"]
    assert (after.opened_at, after.expires_at, after.closing) == (
        before.opened_at,
        before.expires_at,
        False,
    )

    cleared = await backend.set_connection_data("1", "a", ConnectionData())
    assert cleared.presence == seen("online", ["web"])


async def test_data_of_an_unknown_or_closing_connection_is_not_stored(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    await backend.add_connection("2", "b", ttl=LONG, data=WEB)
    await backend.remove_connection("2", "b", grace=LONG)  # closing: user 2 still online
    before = await backend.availability(["1", "2", "3"])

    for user_id, connection_id in [
        ("1", "zz"),  # not one of user 1's
        ("1", "b"),  # user 2's connection id
        ("2", "b"),  # closing
        ("3", "a"),  # a user never seen
    ]:
        assert_silent(await backend.set_connection_data(user_id, connection_id, MOBILE))

    assert await backend.availability(["1", "2", "3"]) == before
    assert before["2"].connections == {"b": WEB}  # a closing lease keeps its data
    assert before["3"].connections == {}


async def test_removing_a_connection_removes_its_data(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    await backend.add_connection("1", "b", ttl=LONG, data=ConnectionData("mobile", "in_call"))

    change = await backend.remove_connection("1", "b")

    assert change.transition is NONE
    assert change.presence == seen("online", ["web"])
    assert (await availability_of(backend, "1")).connections == {"a": WEB}
    # Coming back with the same id does not bring the old data back.
    assert (await backend.add_connection("1", "b", ttl=LONG)).presence is None
    connections = (await availability_of(backend, "1")).connections
    assert connections["a"] == WEB
    assert connections.get("b", ConnectionData()) == ConnectionData()


async def test_a_reconnect_within_grace_inherits_the_data(backend: BasePresenceBackend) -> None:
    in_call = ConnectionData("mobile", "in_call", '{"room": 7}', keep_present=True)
    online = await backend.add_connection("1", "a", ttl=LONG, data=in_call)

    closing = await backend.remove_connection("1", "a", grace=LONG)
    assert_silent(closing)  # a closing lease still counts: nothing public changed
    assert (await availability_of(backend, "1")).presence == online.presence

    back = await backend.add_connection("1", "b", ttl=LONG)
    assert_silent(back)
    me = await availability_of(backend, "1")
    assert me.connections == {"b": in_call}
    assert (me.presence, me.seq) == (seen("online", ["mobile"], ["in_call"]), online.seq)

    # New data given with the reconnect wins over the inherited one.
    await backend.remove_connection("1", "b", grace=LONG)
    again = await backend.add_connection("1", "c", ttl=LONG, data=WEB)
    assert again.transition is NONE
    assert_presence_change(again, seen("online", ["web"]), online.seq)
    assert (await availability_of(backend, "1")).connections == {"c": WEB}


async def test_a_closing_lease_that_expires_takes_its_data_with_it(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    await backend.remove_connection("1", "a", grace=0.1)

    changes = await sweep_for(backend, lambda c: bool(c), "the closing lease swept")

    [offline] = changes
    assert (offline.transition, offline.presence) == (OFFLINE, seen("offline"))
    me = await availability_of(backend, "1")
    assert (me.online, me.connections, me.seq) == (False, {}, offline.seq)
    back = await backend.add_connection("1", "b", ttl=LONG)
    assert back.presence == seen("online")  # nothing inherited after the grace period
    connections = (await availability_of(backend, "1")).connections
    assert connections.get("b", ConnectionData()) == ConnectionData()
    assert "a" not in connections


async def test_a_refused_connection_stores_no_data(backend: BasePresenceBackend) -> None:
    online = await backend.add_connection("1", "a", ttl=LONG, data=WEB, limit=1)

    refused = await backend.add_connection("1", "b", ttl=LONG, data=MOBILE, limit=1, idle=IDLE)

    assert refused.refused
    assert (refused.transition, refused.presence, refused.seq) == (NONE, None, 0)
    me = await availability_of(backend, "1")
    assert (me.presence, me.seq, me.last_active) == (seen("online", ["web"]), online.seq, None)
    assert "b" not in me.connections


async def test_an_expired_lease_of_one_device_is_announced_by_the_sweep(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    both = await backend.add_connection("1", "b", ttl=0.1, data=ConnectionData("mobile", "x"))

    [gone] = await sweep_for(backend, lambda c: bool(c), "the mobile lease swept")

    assert (gone.user_id, gone.transition) == ("1", NONE)
    assert_presence_change(gone, seen("online", ["web"]), both.seq)
    me = await availability_of(backend, "1")
    assert (me.presence, me.seq, list(me.connections)) == (
        seen("online", ["web"]),
        gone.seq,
        ["a"],
    )


async def test_remove_user_announces_offline(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    await backend.add_connection("1", "b", ttl=LONG, data=MOBILE)

    removed, change = await backend.remove_user("1")

    assert (removed, change.transition, change.presence) == (2, OFFLINE, seen("offline"))
    assert not change.hidden
    assert (await availability_of(backend, "1")).connections == {}

    # An invisible user's removal is a hidden transition.
    await backend.add_connection("2", "a", ttl=LONG, data=WEB)
    await backend.set_status("2", "invisible")
    _, hidden = await backend.remove_user("2")
    assert (hidden.transition, hidden.hidden, hidden.presence) == (OFFLINE, True, None)


# What the service layer lets through (printable text: no character below 32, nor 127).
ODD_STRINGS = ["a:b", "3:x", "|", "ü€", "😀", "{x}", "1", "\u0085", "\u2028", " ", "\\n", "é"]


async def test_devices_activities_and_texts_may_be_any_string(
    backend: BasePresenceBackend,
) -> None:
    """Odd characters (separators of some encoding) come back as they were given."""
    for i, odd in enumerate(ODD_STRINGS):
        data = ConnectionData(
            odd, odd[::-1] + "!", json.dumps({"s": odd}), keep_present=i % 2 == 0
        )
        await backend.add_connection("1", f"c{i}", ttl=LONG, data=data)
    text = "".join(ODD_STRINGS)
    await backend.set_status("1", "busy", text=text)

    me = await availability_of(backend, "1")

    assert me.presence == seen(
        "busy", sorted(set(ODD_STRINGS)), sorted({o[::-1] + "!" for o in ODD_STRINGS}), text
    )
    assert me.text == text
    assert [me.connections[f"c{i}"].device for i in range(len(ODD_STRINGS))] == ODD_STRINGS


# -- away, activity, keep_present --------------------------------------------------------------


async def test_an_idle_user_turns_away_at_a_sweep(backend: BasePresenceBackend) -> None:
    before = await backend.now()
    online = await backend.add_connection("1", "a", ttl=LONG, data=WEB, idle=IDLE)
    await backend.add_connection("2", "a", ttl=LONG, data=WEB)  # idle=0: never away
    after = await backend.now()
    me = await availability_of(backend, "1")
    assert me.last_active is not None
    assert before - 0.002 <= me.last_active <= after + 0.002

    changes = await sweep_for(backend, lambda c: bool(c), "user 1 swept away")

    assert await backend.now() >= before + IDLE - 0.01
    [away] = changes
    assert (away.user_id, away.transition) == ("1", NONE)
    assert_presence_change(away, seen("away", ["web"]), online.seq)
    me = await availability_of(backend, "1")
    assert (me.online, me.presence, me.state, me.seq) == (
        True,
        seen("away", ["web"]),
        "away",
        away.seq,
    )
    assert (await backend.sweep()).changes == ()  # announced once
    assert (await availability_of(backend, "2")).presence == seen("online", ["web"])


async def test_touch_brings_an_away_user_back_once(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB, idle=IDLE)
    [away] = await sweep_for(backend, lambda c: bool(c), "user 1 swept away")

    before = await backend.now()
    [back] = await backend.touch([("1", 0.0)], idle=LONG)

    assert (back.user_id, back.transition) == ("1", NONE)
    assert_presence_change(back, seen("online", ["web"]), away.seq)
    assert await backend.touch([("1", 0.0)], idle=LONG) == []  # nothing public changed
    me = await availability_of(backend, "1")
    assert (me.presence, me.state, me.seq) == (seen("online", ["web"]), "online", back.seq)
    assert me.last_active is not None
    assert me.last_active >= before - 0.002
    assert (await backend.sweep()).changes == ()


async def test_connecting_again_counts_as_activity(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB, idle=IDLE)
    [away] = await sweep_for(backend, lambda c: bool(c), "user 1 swept away")

    back = await backend.add_connection("1", "b", ttl=LONG, data=WEB, idle=LONG)

    assert back.transition is NONE
    assert_presence_change(back, seen("online", ["web"]), away.seq)
    assert (await availability_of(backend, "1")).state == "online"


async def test_touch_never_lowers_last_active(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=LONG, idle=LONG)
    first = (await availability_of(backend, "1")).last_active
    assert first is not None

    assert await backend.touch([("1", 3600.0)], idle=LONG) == []  # an hour ago: older
    assert (await availability_of(backend, "1")).last_active == first

    await asyncio.sleep(0.05)
    before = await backend.now()
    await backend.touch([("1", 0.0)], idle=LONG)
    raised = (await availability_of(backend, "1")).last_active
    assert raised is not None
    assert raised >= before - 0.002
    assert raised > first


async def test_touch_reports_how_long_ago_the_user_was_active(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG)  # idle=0: no activity recorded yet
    before = await backend.now()

    await backend.touch([("1", 10.0)], idle=LONG)

    last_active = (await availability_of(backend, "1")).last_active
    after = await backend.now()
    assert last_active is not None
    assert before - 10 - 0.002 <= last_active <= after - 10 + 0.002


async def test_touch_ignores_offline_users(backend: BasePresenceBackend) -> None:
    await backend.add_connection("2", "a", ttl=LONG)
    await backend.remove_connection("2", "a")
    await backend.set_status("3", "busy")
    before = await backend.availability(["1", "2", "3"])

    assert await backend.touch([("1", 0.0), ("2", 0.0), ("3", 0.0)], idle=IDLE) == []

    found = await backend.availability(["1", "2", "3"])
    assert found == before
    assert (found["1"].last_active, found["3"].last_active) == (None, None)
    assert all(not a.online and a.presence == seen("offline") for a in found.values())
    assert await backend.all_online_user_ids() == set()


async def test_touch_of_many_users_in_one_call(backend: BasePresenceBackend) -> None:
    for user in ("1", "2", "3"):
        await backend.add_connection(user, "a", ttl=LONG, idle=IDLE)
    await backend.add_connection("4", "a", ttl=LONG, idle=LONG)
    await sweep_for(backend, lambda c: len(c) >= 3, "three users swept away")

    back = await backend.touch([("1", 0.0), ("3", 0.0), ("4", 0.0), ("5", 0.0)], idle=LONG)

    assert sorted(c.user_id for c in back) == ["1", "3"]
    assert all(c.presence == seen("online") and c.seq > 0 for c in back)
    found = await backend.availability(["1", "2", "3", "4"])
    assert [found[u].state for u in ("1", "2", "3", "4")] == ["online", "away", "online", "online"]


async def test_keep_present_keeps_an_idle_user_online(backend: BasePresenceBackend) -> None:
    in_call = ConnectionData("web", "in_call", keep_present=True)
    await backend.add_connection("1", "a", ttl=LONG, data=in_call, idle=IDLE)
    mobile = await backend.add_connection("1", "b", ttl=LONG, data=MOBILE)
    start = await backend.now()

    await wait_until(backend, start + IDLE + 0.05)
    assert (await backend.sweep()).changes == ()
    me = await availability_of(backend, "1")
    assert (me.presence, me.state, me.seq) == (
        seen("online", ["mobile", "web"], ["in_call"]),
        "online",
        mobile.seq,
    )

    # The call ends: the user has been idle all along, so they are away now.
    # (Announced by the update itself or by the next sweep, once.)
    ended = await backend.set_connection_data("1", "a", WEB)
    changes = [ended]
    changes += await sweep_for(
        backend, lambda c: "away" in states_of([ended, *c], "1"), "user 1 away"
    )
    changes += (await backend.sweep()).changes
    assert states_of(changes, "1") == ["away"]
    me = await availability_of(backend, "1")
    assert (me.presence, me.state) == (seen("away", ["mobile", "web"]), "away")


async def test_busy_outranks_away_and_away_returns_with_available(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB, idle=IDLE)
    busy = await backend.set_status("1", "busy")
    assert busy.presence == seen("busy", ["web"])
    start = await backend.now()

    await wait_until(backend, start + IDLE + 0.05)
    assert (await backend.sweep()).changes == ()  # still busy: nothing public changed
    assert (await availability_of(backend, "1")).state == "busy"

    available = await backend.set_status("1", "available")
    assert_presence_change(available, seen("away", ["web"]), busy.seq)


async def test_an_invisible_user_turning_away_announces_nothing(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB, idle=IDLE)
    hidden = await backend.set_status("1", "invisible")
    await backend.add_connection("2", "a", ttl=LONG, idle=IDLE)  # a visible witness

    changes = await sweep_for(
        backend, lambda c: any(x.user_id == "2" for x in c), "user 2 swept away"
    )
    changes += (await backend.sweep()).changes

    assert [c.user_id for c in changes] == ["2"]
    me = await availability_of(backend, "1")
    assert (me.presence, me.state, me.seq) == (HIDDEN, "away", hidden.seq)


async def test_heartbeat_and_sweep_turns_idle_users_away(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=LONG, idle=IDLE)
    changes: list[Change] = []

    async def away() -> bool:
        _, result = await backend.heartbeat_and_sweep([("1", "a")], ttl=LONG)
        changes.extend(result.changes)
        return bool(changes)

    await eventually(away, timeout=WAIT, what="user 1 swept away")

    [change] = changes
    assert (change.transition, change.presence) == (NONE, seen("away"))


async def test_sweep_limit_bounds_the_users_turned_away(backend: BasePresenceBackend) -> None:
    for i in range(7):
        await backend.add_connection(str(i), "a", ttl=LONG, idle=IDLE)
    start = await backend.now()
    await wait_until(backend, start + IDLE + 0.05)

    changes: list[Change] = []
    for _ in range(3):
        result = await backend.sweep(limit=3)
        assert len(result.changes) <= 3
        changes.extend(result.changes)
    changes += await sweep_for(backend, lambda c: len(changes) + len(c) >= 7, "all away", limit=3)

    assert sorted(c.user_id for c in changes) == [str(i) for i in range(7)]
    assert {c.presence for c in changes} == {seen("away")}
    found = await backend.availability([str(i) for i in range(7)])
    assert {a.state for a in found.values()} == {"away"}


# -- manual status -----------------------------------------------------------------------------


async def test_status_of_an_offline_user_is_kept_and_shown_when_they_connect(
    backend: BasePresenceBackend,
) -> None:
    stored = await backend.set_status("1", "busy", text="Back at 3")

    assert_silent(stored)
    me = await availability_of(backend, "1")
    assert (me.online, me.presence, me.state, me.status, me.text) == (
        False,
        seen("offline"),
        "offline",
        "busy",
        "Back at 3",
    )

    online = await backend.add_connection("1", "a", ttl=LONG, data=WEB)
    assert (online.transition, online.hidden) == (ONLINE, False)
    assert online.presence == seen("busy", ["web"], text="Back at 3")
    offline = await backend.remove_connection("1", "a")
    assert offline.presence == seen("offline")
    # Kept while offline, across connections.
    again = await backend.add_connection("1", "b", ttl=LONG)
    assert again.presence == seen("busy", text="Back at 3")
    assert (await availability_of(backend, "1")).text == "Back at 3"


async def test_a_status_survives_a_restart_of_the_web_server(
    backend: BasePresenceBackend,
) -> None:
    """Another backend instance on the same store (a restarted process) sees the status.

    The memory backend's store is its process: a new instance starts empty, as its
    docstring says (a development backend).
    """
    await backend.set_status("1", "busy", text="Out", ttl=LONG)
    await backend.add_connection("2", "a", ttl=LONG, data=WEB)
    await backend.set_status("2", "invisible")
    await backend.aclose()

    restarted = like(backend)
    try:
        found = await restarted.availability(["1", "2"])
        if not backend.shared_across_processes:
            assert (found["1"].status, found["2"].online) == ("available", False)
            return
        assert (found["1"].status, found["1"].text) == ("busy", "Out")
        assert (found["2"].status, found["2"].presence, found["2"].connections) == (
            "invisible",
            HIDDEN,
            {"a": WEB},
        )
        online = await restarted.add_connection("1", "b", ttl=LONG)
        assert online.presence == seen("busy", text="Out")
    finally:
        await restarted.aclose()


async def test_a_status_with_a_ttl_expires_to_available_and_loses_its_text(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=WEB, idle=LONG)
    before = await backend.now()
    busy = await backend.set_status("1", "busy", text="Focus time", ttl=IDLE)
    after = await backend.now()
    me = await availability_of(backend, "1")
    assert me.status_expires_at is not None
    assert before + IDLE - 0.002 <= me.status_expires_at <= after + IDLE + 0.002

    [expired] = await sweep_for(backend, lambda c: bool(c), "the status expired")

    assert await backend.now() >= before + IDLE - 0.01
    assert expired.transition is NONE
    assert_presence_change(expired, seen("online", ["web"]), busy.seq)
    me = await availability_of(backend, "1")
    assert (me.status, me.text, me.status_expires_at, me.state, me.seq) == (
        "available",
        "",
        None,
        "online",
        expired.seq,
    )
    assert (await backend.sweep()).changes == ()


async def test_an_expired_invisible_status_shows_the_user_again(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG, data=MOBILE, idle=LONG)
    await backend.set_status("1", "invisible", ttl=IDLE)

    [shown] = await sweep_for(backend, lambda c: bool(c), "the status expired")

    assert shown.presence == seen("online", ["mobile"])
    assert (await availability_of(backend, "1")).status == "available"


async def test_the_status_of_an_offline_user_expires_too(backend: BasePresenceBackend) -> None:
    await backend.set_status("1", "busy", text="Away this week", ttl=IDLE)
    start = await backend.now()
    await wait_until(backend, start + IDLE + 0.05)

    assert (await backend.sweep()).changes == ()  # offline: nothing public changed
    me = await availability_of(backend, "1")
    assert (me.status, me.text, me.status_expires_at) == ("available", "", None)
    online = await backend.add_connection("1", "a", ttl=LONG)
    assert online.presence == seen("online")


async def test_a_new_status_replaces_the_old_one_and_its_expiry(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=LONG)
    await backend.set_status("1", "busy", text="short", ttl=IDLE)

    kept = await backend.set_status("1", "busy", text="until I say")

    assert kept.presence == seen("busy", text="until I say")
    me = await availability_of(backend, "1")
    assert (me.status, me.text, me.status_expires_at) == ("busy", "until I say", None)
    start = await backend.now()
    await wait_until(backend, start + IDLE + 0.05)
    assert (await backend.sweep()).changes == ()
    assert (await availability_of(backend, "1")).status == "busy"


# -- many users --------------------------------------------------------------------------------


async def test_availability_of_many_users_in_one_call(backend: BasePresenceBackend) -> None:
    assert await backend.availability([]) == {}
    for i in range(0, 60, 3):
        await backend.add_connection(str(i), "a", ttl=LONG, data=WEB)
    await backend.set_status("3", "busy", text="x")
    await backend.set_status("6", "invisible")
    await backend.set_status("7", "busy")  # offline
    asked = [str(i) for i in range(60)] + ["unknown", "3"]

    found = await backend.availability(asked)

    assert set(found) == set(asked)
    for uid, entry in found.items():
        assert entry.user_id == uid
    assert found["0"].presence == seen("online", ["web"])
    assert (found["3"].presence, found["3"].text) == (seen("busy", ["web"], text="x"), "x")
    assert (found["6"].presence, found["6"].state, found["6"].online) == (
        HIDDEN,
        "online",
        True,
    )
    assert (found["7"].presence, found["7"].status, found["7"].online) == (
        seen("offline"),
        "busy",
        False,
    )
    assert found["unknown"] == Availability(
        "unknown", False, 0, seen("offline"), "offline", connections={}
    )
    online = {uid for uid, a in found.items() if a.online}
    assert online == {str(i) for i in range(0, 60, 3)}
    assert online == await backend.online_user_ids(asked)


@pytest.mark.parametrize("user_id", ODD_IDS)
async def test_availability_of_odd_ids(backend: BasePresenceBackend, user_id: str) -> None:
    other = user_id[:-1] or "other"  # a prefix of the id, kept apart
    await backend.add_connection(other, "c:1|x", ttl=LONG, data=WEB)
    await backend.set_status(other, "busy", text="t")
    data = ConnectionData("ü|dev", "viewing:/a|b", '{"k": "ü"}')

    online = await backend.add_connection(user_id, "c:1|x", ttl=LONG, data=data)
    await backend.add_connection(user_id, "ü:2", ttl=LONG)
    await backend.set_connection_data(user_id, "ü:2", MOBILE)

    assert online.presence == seen("online", ["ü|dev"], ["viewing:/a|b"])
    found = await backend.availability([user_id, other])
    assert found[user_id].connections == {"c:1|x": data, "ü:2": MOBILE}
    assert found[user_id].presence == seen("online", ["mobile", "ü|dev"], ["viewing:/a|b"])
    assert (found[user_id].status, found[other].status) == ("available", "busy")
    assert found[other].connections == {"c:1|x": WEB}


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_updates_of_one_user_announce_each_change_in_seq_order(
    backend: BasePresenceBackend,
) -> None:
    """Each announced presence differs from the one before it in seq order; the last wins."""
    devices = ["web", "mobile", "desktop"]
    for i in range(8):
        data = ConnectionData(devices[i % 3])
        await backend.add_connection("1", f"c{i}", ttl=LONG, data=data, idle=IDLE)
    await sweep_for(backend, lambda c: bool(c), "user 1 swept away")  # so touch matters
    start = await availability_of(backend, "1")
    assert start.state == "away"

    calls: list[Any] = []
    for i in range(60):
        cid = f"c{i % 8}"
        kind = i % 6
        if kind == 0:
            data = ConnectionData(devices[i % 3], f"act{i % 4}", keep_present=i % 2 == 0)
            calls.append(backend.set_connection_data("1", cid, data))
        elif kind == 1:
            calls.append(backend.touch([("1", 0.0)], idle=LONG))
        elif kind == 2 and i % 8 >= 4:  # c0..c3 stay: the user stays online
            calls.append(backend.remove_connection("1", cid))
        elif kind == 3:
            calls.append(
                backend.add_connection("1", f"n{i}", ttl=LONG, data=ConnectionData(f"d{i % 5}"))
            )
        elif kind == 4:
            calls.append(backend.set_status("1", "busy" if i % 4 else "available"))
        else:
            calls.append(backend.set_connection_data("1", cid, ConnectionData("web")))
    results = await asyncio.gather(*calls)

    changes = [c for r in results for c in (r if isinstance(r, list) else [r])]
    announced = sorted((c for c in changes if c.presence is not None), key=lambda c: c.seq)
    assert announced, "the updates announced nothing"
    seqs = [c.seq for c in announced]
    assert len(set(seqs)) == len(seqs)
    assert seqs[0] > start.seq
    assert all(c.transition is NONE and c.user_id == "1" for c in changes)
    previous = start.presence
    for change in announced:
        assert change.presence != previous, "a presence change that changed nothing"
        previous = change.presence
    final = await availability_of(backend, "1")
    assert (final.presence, final.seq) == (previous, seqs[-1])
    assert final.online


async def test_concurrent_connects_and_disconnects_keep_presence_consistent(
    backend: BasePresenceBackend,
) -> None:
    async def churn(worker: int) -> list[Change]:
        changes = []
        for i in range(10):
            cid = f"w{worker}-{i}"
            data = ConnectionData(["web", "mobile"][worker % 2], f"a{i % 3}")
            changes.append(await backend.add_connection("1", cid, ttl=LONG, data=data))
            await asyncio.sleep(0)
            changes.append(await backend.set_connection_data("1", cid, ConnectionData("desk")))
            changes.append(await backend.remove_connection("1", cid))
        return changes

    results = await asyncio.gather(*(churn(w) for w in range(5)))

    announced = sorted((c for r in results for c in r if c.announces), key=lambda c: c.seq)
    seqs = [c.seq for c in announced]
    assert len(set(seqs)) == len(seqs)
    previous = seen("offline")
    for change in announced:
        if change.transition is not NONE:
            # A visible transition always carries the presence change.
            assert change.presence is not None
            assert change.presence.online == (change.transition is ONLINE)
        assert change.presence != previous
        previous = change.presence
    assert previous == seen("offline")
    final = await availability_of(backend, "1")
    assert (final.online, final.presence, final.connections) == (False, seen("offline"), {})
    assert final.seq == seqs[-1]


async def test_concurrent_sweeps_and_touches_announce_each_user_consistently(
    backend: BasePresenceBackend,
) -> None:
    """Sweeps turning users away race touches bringing them back: no double announcements."""
    users = [str(i) for i in range(20)]
    starts = {}
    for user in users:
        starts[user] = await backend.add_connection(user, "a", ttl=LONG, data=WEB, idle=IDLE)
    await wait_until(backend, await backend.now() + IDLE + 0.05)  # all due, none swept

    calls: list[Any] = []
    for i in range(6):
        calls.append(backend.sweep(limit=7))
        calls.append(backend.touch([(u, 0.0) for u in users[i % 2 :: 3]], idle=LONG))
        calls.append(backend.heartbeat_and_sweep([(u, "a") for u in users[::2]], ttl=LONG))
    results = await asyncio.gather(*calls)

    changes: list[Change] = []
    for result in results:
        if isinstance(result, list):
            changes += result
        elif isinstance(result, tuple):
            changes += result[1].changes
        else:
            changes += result.changes
    changes += await sweep_for(backend, lambda c: True, "one more sweep")
    found = await backend.availability(users)
    for user in users:
        mine = sorted((c for c in changes if c.user_id == user), key=lambda c: c.seq)
        previous = starts[user].presence
        for change in mine:
            assert change.transition is NONE
            assert change.seq > starts[user].seq
            assert change.presence != previous, f"user {user}: {mine}"
            previous = change.presence
        assert found[user].presence == previous
        if mine:
            assert found[user].seq == mine[-1].seq
    # Everyone touched is online again; the rest (users[2::3] are never touched) away.
    touched = set(users[0::3] + users[1::3])
    assert {u for u in users if found[u].state == "online"} == touched
    assert {u for u in users if found[u].state == "away"} == set(users) - touched


# -- both backends alike -----------------------------------------------------------------------


def test_both_backends_derive_the_same_availability(redis_url: str) -> None:
    """Random operation sequences give the same presence changes on memory and on Redis.

    No idleness or expiry here (their timing differs between two stores); seqs are
    compared by their order only.
    """
    users = st.sampled_from(["1", "2"])
    connections = st.sampled_from(["a", "b", "c|1"])
    datas = st.builds(
        ConnectionData,
        device=st.sampled_from(["", "web", "mobile"]),
        activity=st.sampled_from(["", "in_call", "viewing:/x"]),
        data=st.sampled_from(["", '{"n": 1}']),
        keep_present=st.booleans(),
    )

    class SameAvailability(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.memory = MemoryBackend()
            self.redis = RedisBackend(url=redis_url, key_prefix=f"adiff-{uuid.uuid4().hex[:8]}")

        def both(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            async def run(backend: BasePresenceBackend) -> Any:
                return await getattr(backend, name)(*args, **kwargs)

            return (
                self.loop.run_until_complete(run(self.memory)),
                self.loop.run_until_complete(run(self.redis)),
            )

        @staticmethod
        def decided(change: Change) -> tuple[Any, ...]:
            return (
                change.user_id,
                change.transition,
                change.connection_count,
                change.presence,
                change.hidden,
                change.seq > 0,
            )

        def same(self, name: str, *args: Any, **kwargs: Any) -> None:
            memory, redis_ = self.both(name, *args, **kwargs)
            if isinstance(memory, tuple):  # remove_user
                memory, redis_ = memory[1], redis_[1]
            if isinstance(memory, list):
                assert [self.decided(c) for c in memory] == [self.decided(c) for c in redis_]
            else:
                assert self.decided(memory) == self.decided(redis_)

        @rule(user=users, cid=connections, data=st.none() | datas)
        def add(self, user: str, cid: str, data: ConnectionData | None) -> None:
            self.same("add_connection", user, cid, ttl=LONG, data=data)

        @rule(user=users, cid=connections, grace=st.sampled_from([0, LONG]))
        def remove(self, user: str, cid: str, grace: float) -> None:
            self.same("remove_connection", user, cid, grace=grace)

        @rule(user=users, cid=connections, data=datas)
        def set_data(self, user: str, cid: str, data: ConnectionData) -> None:
            self.same("set_connection_data", user, cid, data)

        @rule(
            user=users,
            status=st.sampled_from(["available", "busy", "invisible"]),
            text=st.sampled_from(["", "hi ü"]),
        )
        def set_status(self, user: str, status: str, text: str) -> None:
            self.same("set_status", user, status, text=text)

        @rule(who=st.lists(users, max_size=2))
        def touch(self, who: list[str]) -> None:
            self.same("touch", [(u, 0.0) for u in who], idle=LONG)

        @rule(user=users)
        def remove_user(self, user: str) -> None:
            self.same("remove_user", user)

        @invariant()
        def same_availability(self) -> None:
            memory, redis_ = self.both("availability", ["1", "2", "3"])
            for uid in ("1", "2", "3"):
                m, r = memory[uid], redis_[uid]
                assert (m.online, m.presence, m.state, m.status, m.text, m.connections) == (
                    r.online,
                    r.presence,
                    r.state,
                    r.status,
                    r.text,
                    r.connections,
                )
                assert (m.seq > 0, m.last_active is None) == (r.seq > 0, r.last_active is None)

        def teardown(self) -> None:
            self.loop.run_until_complete(self.redis.clear())
            self.loop.run_until_complete(self.redis.aclose())
            self.loop.close()

    run_state_machine_as_test(
        SameAvailability,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- third-party backends ------------------------------------------------------------------


AVAILABILITY_CALLS = {
    "set_connection_data": lambda b: b.set_connection_data("1", "a", WEB),
    "set_status": lambda b: b.set_status("1", "busy"),
}


class StreamsOnlyBackend(BasePresenceBackend):
    """A third-party backend written before availability joined the contract."""

    async def presence_snapshot(self, user_ids: Any) -> dict[str, tuple[bool, int]]:
        return {uid: (uid == "1", 7 if uid == "1" else 0) for uid in user_ids}


@pytest.mark.parametrize("method", sorted(AVAILABILITY_CALLS))
async def test_a_backend_without_availability_is_told_what_to_implement(method: str) -> None:
    with pytest.raises(NotImplementedError) as caught:
        await AVAILABILITY_CALLS[method](StreamsOnlyBackend())

    assert str(caught.value) == f"{__name__}.StreamsOnlyBackend must implement {method}()"


async def test_a_backend_without_availability_shows_plain_online_and_offline() -> None:
    """The defaults: nobody is ever away, and availability() is the presence snapshot."""
    older = StreamsOnlyBackend()

    assert await older.touch([("1", 0.0)], idle=IDLE) == []
    assert await older.availability(["1", "2"]) == {
        "1": Availability("1", True, 7, seen("online"), "online"),
        "2": Availability("2", False, 0, seen("offline"), "offline"),
    }
