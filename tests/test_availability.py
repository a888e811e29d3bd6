"""Availability through the engine, the service and ws/user/, on both backends.

States (online, away, busy, offline), a user's manual status (busy, invisible, with a text
and an expiry), idle from activity, per-connection presence data, and who sees what of
it. Everything runs on the real components: the memory and the Redis presence backends
(the ``presence`` fixture's params), the real channel layer, sockets through the JWT
application, the runtime's real beat with short intervals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence import signals
from django_presence.backends import get_backend
from django_presence.policies import DefaultPolicy
from django_presence.services import user_messaging_service, user_online_service
from tests.asgi import application

from .conftest import SignalLog
from .test_multi_server import connect, layer_config
from .test_user_consumer import TIMEOUT, assert_usable, nothing_more, receive, request
from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)

OPEN = "django_presence.policies.OpenPolicy"
#: Anyone may watch anyone; only staff (and oneself) see details (DefaultPolicy's rule).
PRESENCE_ONLY = "django_presence.policies.PresenceOnlyPolicy"


class WardPolicy(DefaultPolicy):
    """Everyone but carol may watch anyone; only staff and oneself see details."""

    async def are_related(self, user: Any, target_id: Any) -> bool:
        return user.username != "carol" or target_id == user.pk


#: The fields of a status_changed for a watcher without details.
BARE_FIELDS = {"user_id", "is_online", "last_seen", "seq", "state"}


# -- helpers ---------------------------------------------------------------------------------


async def open_socket(user: Any, query: str = "") -> WebsocketCommunicator:
    """A connected ws/user/ socket of ``user`` through the JWT application."""
    url = f"/ws/user/?token={make_token(user.pk)}{'&' + query if query else ''}"
    communicator = WebsocketCommunicator(application, url)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def watch(watcher: WebsocketCommunicator, *users: Any) -> dict[str, Any]:
    """Subscribe ``watcher`` to ``users``; the presence_state's data."""
    await request(watcher, "subscribe_presence", {"user_ids": [u.pk for u in users]}, id="w")
    frame = await receive(watcher)
    assert frame["type"] == "presence_state", frame
    return dict(frame["data"])


async def next_frame(
    communicator: WebsocketCommunicator, type: str, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """The next frame, which must be of ``type``; its data (with the ``id`` if any)."""
    frame = await receive(communicator, timeout)
    assert frame["type"] == type, frame
    return {**frame["data"], **({"id": frame["id"]} if "id" in frame else {})}


async def status(communicator: WebsocketCommunicator, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame, which must be a status_changed; its data."""
    return await next_frame(communicator, "status_changed", timeout)


async def drain(
    communicator: WebsocketCommunicator, quiet: float = 0.5, limit: int = 500
) -> list[dict[str, Any]]:
    """Every frame until none arrives for ``quiet`` seconds (at most ``limit``)."""
    frames = []
    while not await communicator.receive_nothing(timeout=quiet):
        frames.append(await receive(communicator))
        assert len(frames) <= limit, frames[-5:]
    return frames


async def close_all(*communicators: WebsocketCommunicator) -> None:
    for communicator in communicators:
        await communicator.disconnect()


async def error_code(communicator: WebsocketCommunicator, type: str, data: Any) -> str:
    """Send a request with ``data``; the code of the error it must get."""
    await request(communicator, type, data, id="bad")
    frame = await receive(communicator)
    assert frame["type"] == "error", (data, frame)
    assert frame.get("id") == "bad", (data, frame)
    return str(frame["data"]["code"])


@pytest.fixture
def configure(presence: dict[str, Any]) -> Iterator[Any]:
    """``configure(**settings)``: DJANGO_PRESENCE entries for the rest of the test."""
    stack: list[Any] = []

    def apply(**entries: Any) -> dict[str, Any]:
        presence.update(entries)
        override = override_settings(DJANGO_PRESENCE=dict(presence))
        override.enable()
        stack.append(override)
        return presence

    yield apply
    for override in reversed(stack):
        override.disable()


@pytest.fixture
async def users(presence: dict[str, Any]) -> list[Any]:
    """alice, bob, carol and a staff user, admin."""
    model = get_user_model()
    return [await model.objects.acreate(username=n) for n in ("alice", "bob", "carol")] + [
        await model.objects.acreate(username="admin", is_staff=True)
    ]


class PresenceLog:
    """Every ``presence_changed`` signal: (user_id, state, devices, activities, text, seq)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[Any, str, tuple[str, ...], tuple[str, ...], str, int]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        with self._lock:
            self.events.append(
                (
                    kwargs["user_id"],
                    kwargs["state"],
                    tuple(kwargs["devices"]),
                    tuple(kwargs["activities"]),
                    kwargs["status_text"],
                    kwargs["seq"],
                )
            )

    def of(self, user_id: Any) -> list[tuple[str, tuple[str, ...], tuple[str, ...], str]]:
        with self._lock:
            return [e[1:5] for e in self.events if e[0] == user_id]

    def seqs(self, user_id: Any) -> list[int]:
        with self._lock:
            return [e[5] for e in self.events if e[0] == user_id]


@pytest.fixture
def presence_log() -> Iterator[PresenceLog]:
    log = PresenceLog()
    signals.presence_changed.connect(log, weak=False)
    yield log
    signals.presence_changed.disconnect(log)


async def wait_for(condition: Any, timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until ``await condition()`` is true."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- who sees what -------------------------------------------------------------------------


async def test_details_for_a_watcher_with_them_only_the_state_for_one_without(
    users: list[Any], configure: Any
) -> None:
    alice, bob, _, admin = users
    configure(POLICY=PRESENCE_ONLY)  # anyone watches; staff alone sees details
    bob_tab = await open_socket(bob)
    plain, staff = await open_socket(alice), await open_socket(admin)
    snapshot = await watch(plain, bob)
    assert snapshot["states"] == {str(bob.pk): {"state": "online"}}
    snapshot = await watch(staff, bob)
    assert snapshot["states"] == {
        str(bob.pk): {"state": "online", "devices": [], "activities": [], "status_text": ""}
    }

    # An activity and a device: the staff watcher sees them; alice, who sees the state
    # only, gets nothing at all (her view of bob did not change).
    await request(bob_tab, "set_presence", {"device": "web", "activity": "in_call"}, id=1)
    assert await next_frame(bob_tab, "ack") == {
        "request": "set_presence",
        "deferred": False,
        "id": 1,
    }
    seen = await status(staff)
    assert seen["state"] == "online"
    assert (seen["devices"], seen["activities"], seen["status_text"]) == (["web"], ["in_call"], "")
    await nothing_more(plain, 0.5)

    # A state change reaches both, with details for the staff watcher only.
    await request(bob_tab, "set_status", {"status": "busy", "text": "In theatre"})
    await next_frame(bob_tab, "status")
    detailed, bare = await status(staff), await status(plain)
    assert detailed == {
        "user_id": bob.pk,
        "is_online": True,
        "last_seen": None,
        "seq": detailed["seq"],
        "state": "busy",
        "devices": ["web"],
        "activities": ["in_call"],
        "status_text": "In theatre",
    }
    assert set(bare) == BARE_FIELDS
    assert (bare["state"], bare["is_online"], bare["seq"]) == ("busy", True, detailed["seq"])
    assert detailed["seq"] > seen["seq"]
    # The text changes, the state does not: only the watcher with details hears of it.
    await request(bob_tab, "set_status", {"status": "busy", "text": "Still in theatre"})
    await next_frame(bob_tab, "status")
    assert (await status(staff))["status_text"] == "Still in theatre"
    await nothing_more(plain, 0.5)
    await nothing_more(staff)
    await close_all(bob_tab, plain, staff)


async def test_open_policy_gives_everyone_details(users: list[Any], configure: Any) -> None:
    alice, bob, *_ = users
    configure(POLICY=OPEN)
    watcher = await open_socket(alice)
    await watch(watcher, bob)
    bob_tab = await open_socket(bob, "device=desktop")
    assert await status(watcher) == {
        "user_id": bob.pk,
        "is_online": True,
        "last_seen": None,
        "seq": (await user_online_service.aget_presence([bob.pk]))[bob.pk].seq,
        "state": "online",
        "devices": ["desktop"],
        "activities": [],
        "status_text": "",
    }
    await close_all(bob_tab, watcher)


async def test_device_on_the_url_is_in_the_first_status_changed(users: list[Any]) -> None:
    alice, bob, *_ = users
    watcher = await open_socket(alice)
    await watch(watcher, bob)
    bob_tab = await open_socket(bob, "device=mobile")
    frame = await status(watcher)
    assert (frame["state"], frame["devices"]) == ("online", ["mobile"])
    await nothing_more(watcher)  # no second frame adding the device
    # A second tab on the web adds a device: one change.
    web = await open_socket(bob, "device=web")
    assert (await status(watcher))["devices"] == ["mobile", "web"]
    await web.disconnect()
    assert (await status(watcher))["devices"] == ["mobile"]
    # Percent-encoded UTF-8 is read as such.
    kiosk = await open_socket(bob, "device=caf%C3%A9")
    assert (await status(watcher))["devices"] == ["café", "mobile"]
    await kiosk.disconnect()
    assert (await status(watcher))["devices"] == ["mobile"]
    # An invalid device is ignored, never a refused socket.
    for bad in ("x" * 33, "a%00b", "tab%09", ""):
        odd = await open_socket(bob, "device=" + bad)
        await assert_usable(odd)
        await odd.disconnect()
    await nothing_more(watcher)
    await close_all(bob_tab, watcher)


# -- set_status ------------------------------------------------------------------------------


async def test_busy_then_available(users: list[Any]) -> None:
    alice, bob, *_ = users
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    await request(bob_tab, "set_status", {"status": "busy"}, id="s")
    assert await next_frame(bob_tab, "status") == {
        "status": "busy",
        "text": "",
        "expires_in": None,
        "id": "s",
    }
    busy = await status(watcher)
    assert (busy["state"], busy["is_online"], busy["last_seen"]) == ("busy", True, None)
    await nothing_more(watcher)
    await request(bob_tab, "set_status", {"status": "available"})
    await next_frame(bob_tab, "status")
    back = await status(watcher)
    assert back["state"] == "online"
    assert back["seq"] > busy["seq"]
    # Setting the same status again changes nothing others see.
    await request(bob_tab, "set_status", {"status": "available"})
    await next_frame(bob_tab, "status")
    await nothing_more(watcher)
    await close_all(bob_tab, watcher)


async def test_status_frame_reaches_the_other_tabs_once_and_the_requester_once(
    users: list[Any],
) -> None:
    _, bob, *_ = users
    tab1, tab2 = await open_socket(bob), await open_socket(bob)
    await request(tab1, "set_status", {"status": "busy", "text": "Lunch", "expires_in": 600}, 9)
    expected = {"status": "busy", "text": "Lunch", "expires_in": 600}
    assert await next_frame(tab1, "status") == {**expected, "id": 9}
    assert await next_frame(tab2, "status") == expected
    await nothing_more(tab1)
    await nothing_more(tab2)
    # Server code setting the status tells every tab.
    await user_online_service.aset_status(bob.pk, "available")
    for tab in (tab1, tab2):
        assert await next_frame(tab, "status") == {
            "status": "available",
            "text": "",
            "expires_in": None,
        }
    await nothing_more(tab1)
    await close_all(tab1, tab2)


async def test_invisible_looks_offline_and_still_gets_messages(
    users: list[Any], signal_log: SignalLog
) -> None:
    alice, bob, *_ = users
    watcher = await open_socket(alice)
    bob_tab, bob_tab2 = await open_socket(bob), await open_socket(bob)
    await watch(watcher, bob)
    await request(bob_tab, "set_status", {"status": "invisible"})
    await next_frame(bob_tab, "status")
    await next_frame(bob_tab2, "status")
    gone = await status(watcher)
    assert (gone["state"], gone["is_online"]) == ("offline", False)
    assert gone["devices"] == gone["activities"] == []
    assert gone["last_seen"]
    # Others read him offline; he reads himself online.
    as_alice = await user_online_service.aget_presence([bob.pk], viewer=alice)
    assert (as_alice[bob.pk].state, as_alice[bob.pk].is_online) == ("offline", False)
    assert as_alice[bob.pk].last_seen is None
    as_bob = (await user_online_service.aget_presence([bob.pk], viewer=bob))[bob.pk]
    assert (as_bob.state, as_bob.is_online, as_bob.status) == ("online", True, "invisible")
    assert await user_online_service.ais_user_online(bob.pk)

    # Messages still reach every tab of his.
    await user_messaging_service.send_notification_to_user(bob.pk, "t", "m")
    await request(watcher, "direct_message", {"target_user_id": bob.pk, "message": "hi"})
    for tab in (bob_tab, bob_tab2):
        assert (await next_frame(tab, "notification"))["title"] == "t"
        assert (await next_frame(tab, "direct_message"))["message"] == "hi"

    # Changing his presence data while invisible tells nobody anything.
    await request(bob_tab, "set_presence", {"device": "web", "activity": "in_call"})
    await nothing_more(watcher, 0.5)
    # His tabs closing and opening: user_offline and user_online fire, watchers hear nothing.
    signal_log.clear()
    await close_all(bob_tab, bob_tab2)
    assert signal_log.of(bob.pk) == ["offline"]
    bob_tab = await open_socket(bob)
    assert signal_log.of(bob.pk) == ["offline", "online"]
    await nothing_more(watcher, 0.5)
    # The status survived the reconnect; going back to available shows him online.
    await request(bob_tab, "set_status", {"status": "available"})
    assert await next_frame(bob_tab, "status") == {
        "status": "available",
        "text": "",
        "expires_in": None,
    }
    back = await status(watcher)
    assert (back["state"], back["is_online"], back["last_seen"]) == ("online", True, None)
    assert back["seq"] > gone["seq"]
    await nothing_more(watcher)
    await close_all(bob_tab, watcher)


async def test_an_invisible_user_has_no_last_seen_for_others(users: list[Any]) -> None:
    """When an invisible user closes their last tab is theirs: no watcher learns it."""
    alice, bob, *_ = users
    await user_online_service.aset_status(bob.pk, "invisible")
    bob_tab = await open_socket(bob)
    await bob_tab.disconnect()
    await bob.arefresh_from_db()
    assert bob.last_seen is not None  # the database copy keeps the truth
    watcher = await open_socket(alice)
    snapshot = await watch(watcher, bob)
    assert snapshot["users"] == {str(bob.pk): False}
    assert snapshot["last_seen"] == {str(bob.pk): None}
    seen = (await user_online_service.aget_presence([bob.pk], viewer=alice))[bob.pk]
    assert (seen.state, seen.last_seen) == ("offline", None)
    own = (await user_online_service.aget_presence([bob.pk], viewer=bob))[bob.pk]
    assert own.last_seen == bob.last_seen
    # Visible again, his last_seen is everyone's to see.
    await user_online_service.aset_status(bob.pk, "available")
    assert (await watch(watcher, bob))["last_seen"] == {str(bob.pk): bob.last_seen.isoformat()}
    await watcher.disconnect()


async def test_a_status_that_expires_turns_back_to_online(
    users: list[Any], configure: Any
) -> None:
    alice, bob, *_ = users
    configure(HEARTBEAT_INTERVAL=0.2)
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    started = time.monotonic()
    await request(bob_tab, "set_status", {"status": "busy", "text": "brb", "expires_in": 0.6})
    assert (await next_frame(bob_tab, "status"))["expires_in"] == 0.6
    busy = await status(watcher)
    assert (busy["state"], busy["status_text"]) == ("busy", "brb")
    back = await status(watcher, timeout=5)
    assert time.monotonic() - started >= 0.5
    assert (back["state"], back["status_text"]) == ("online", "")
    assert back["seq"] > busy["seq"]
    mine = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert (mine.status, mine.status_text, mine.status_expires_at) == ("available", "", None)
    await nothing_more(watcher)
    await close_all(bob_tab, watcher)


async def test_a_status_that_expired_while_offline_is_gone_on_connect(
    users: list[Any], configure: Any
) -> None:
    alice, bob, *_ = users
    configure(HEARTBEAT_INTERVAL=0.2)
    watcher = await open_socket(alice)
    await watch(watcher, bob)
    await user_online_service.aset_status(bob.pk, "busy", text="gone", expires_in=0.3)
    await asyncio.sleep(0.5)
    bob_tab = await open_socket(bob)
    frame = await status(watcher)
    assert (frame["state"], frame["status_text"]) == ("online", "")
    # Set while offline, expiring while online: the sweep ends it.
    await bob_tab.disconnect()
    assert (await status(watcher))["state"] == "offline"
    await user_online_service.aset_status(bob.pk, "busy", expires_in=0.8)
    bob_tab = await open_socket(bob)
    assert (await status(watcher))["state"] == "busy"
    assert (await status(watcher, timeout=5))["state"] == "online"
    mine = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert (mine.status, mine.status_expires_at) == ("available", None)
    await close_all(bob_tab, watcher)


async def test_status_is_kept_while_offline(users: list[Any], presence_log: PresenceLog) -> None:
    alice, bob, *_ = users
    await user_online_service.aset_status(bob.pk, "busy", text="Away on leave")
    assert presence_log.of(bob.pk) == []  # offline: nobody is told anything
    watcher = await open_socket(alice)
    await watch(watcher, bob)
    bob_tab = await open_socket(bob)
    frame = await status(watcher)
    assert (frame["state"], frame["status_text"]) == ("busy", "Away on leave")
    await close_all(bob_tab, watcher)


# -- set_presence ----------------------------------------------------------------------------


async def test_set_presence_changes_in_place_without_a_flap(
    users: list[Any], signal_log: SignalLog
) -> None:
    alice, bob, *_ = users
    watcher, bob_tab = await open_socket(alice), await open_socket(bob, "device=web")
    await watch(watcher, bob)
    signal_log.clear()
    await request(bob_tab, "set_presence", {"activity": "viewing:/ward/3", "data": {"bed": 4}})
    assert await next_frame(bob_tab, "ack") == {"request": "set_presence", "deferred": False}
    frame = await status(watcher)
    assert (frame["state"], frame["devices"], frame["activities"]) == (
        "online",
        ["web"],  # the omitted device kept its value
        ["viewing:/ward/3"],
    )
    await nothing_more(watcher)
    assert signal_log.of(bob.pk) == []  # no offline, no online
    mine = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    (data,) = mine.connections.values()
    assert data == {"device": "web", "activity": "viewing:/ward/3", "data": {"bed": 4}}
    # null clears a field; the same values again are no change.
    await request(bob_tab, "set_presence", {"activity": None})
    await next_frame(bob_tab, "ack")
    assert (await status(watcher))["activities"] == []
    await request(bob_tab, "set_presence", {"activity": None})
    await next_frame(bob_tab, "ack")
    await nothing_more(watcher)
    await nothing_more(bob_tab)
    await close_all(bob_tab, watcher)


async def test_a_reload_within_the_grace_period_keeps_the_connection_data(
    users: list[Any], configure: Any
) -> None:
    alice, bob, *_ = users
    configure(OFFLINE_GRACE_PERIOD=5)
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    await request(bob_tab, "set_presence", {"device": "web", "activity": "in_call"})
    await next_frame(bob_tab, "ack")
    assert (await status(watcher))["activities"] == ["in_call"]
    await bob_tab.disconnect()  # a page reload: the new socket inherits the data
    bob_tab = await open_socket(bob)
    await nothing_more(watcher)
    # The reloaded page sets its data only: the device and the call are kept.
    await request(bob_tab, "set_presence", {"data": {"room": 7}})
    await next_frame(bob_tab, "ack")
    await nothing_more(watcher)
    mine = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert list(mine.connections.values()) == [
        {"device": "web", "activity": "in_call", "data": {"room": 7}}
    ]
    await close_all(bob_tab, watcher)


async def test_set_presence_over_the_rate_is_deferred_then_written(
    users: list[Any], configure: Any
) -> None:
    alice, bob, *_ = users
    configure(PRESENCE_UPDATE_RATE=5, PRESENCE_UPDATE_PERIOD=2)
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    for i in range(5):
        await request(bob_tab, "set_presence", {"activity": f"step-{i}"}, id=i)
        assert await next_frame(bob_tab, "ack") == {
            "request": "set_presence",
            "deferred": False,
            "id": i,
        }
    for i in range(5, 8):
        await request(bob_tab, "set_presence", {"activity": f"step-{i}"}, id=i)
        assert await next_frame(bob_tab, "ack") == {
            "request": "set_presence",
            "deferred": True,
            "id": i,
        }
    # Every frame until the merged one (due ~0.4 s later), then any more for two tokens'
    # time (0.8 s): a late extra write would show up there.
    frames = [await receive(watcher)]
    while frames[-1].get("data", {}).get("activities") != ["step-7"]:
        frames.append(await receive(watcher, 5))
        assert len(frames) <= 20, frames
    frames += await drain(watcher, quiet=0.8)
    assert all(f["type"] == "status_changed" for f in frames), frames
    # The five written at once, then the last merged one when allowed (~0.4 s later).
    assert [f["data"]["activities"] for f in frames] == [[f"step-{i}"] for i in (0, 1, 2, 3, 4, 7)]
    seqs = [f["data"]["seq"] for f in frames]
    assert seqs == sorted(set(seqs))
    mine = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert mine.activities == ("step-7",)
    await assert_usable(bob_tab)
    await close_all(bob_tab, watcher)


_BIG = {f"k{i}": "x" * 200 for i in range(10)}  # 10 keys, over 2 KiB

#: (request type, data, the error codes it may get).
BAD_INPUT: list[tuple[str, Any, set[str]]] = [
    ("set_presence", {"mood": "happy"}, {"invalid_payload"}),
    ("set_presence", {"device": "web", "extra": 1}, {"invalid_payload"}),
    ("set_presence", {"device": 5}, {"invalid_payload"}),
    ("set_presence", {"device": ["web"]}, {"invalid_payload"}),
    ("set_presence", {"activity": True}, {"invalid_payload"}),
    ("set_presence", {"data": "text"}, {"invalid_payload"}),
    ("set_presence", {"data": [1, 2]}, {"invalid_payload"}),
    ("set_presence", {"device": "x" * 33}, {"too_large"}),
    ("set_presence", {"activity": "x" * 65}, {"too_large"}),
    ("set_presence", {"device": "we\nb"}, {"invalid_payload"}),
    ("set_presence", {"data": {f"k{i}": i for i in range(11)}}, {"too_large"}),
    ("set_presence", {"data": _BIG}, {"too_large"}),
    ("set_presence", {"data": {"k": "x" * 2048}}, {"too_large"}),
    ("set_presence", {"device": "\ud800"}, {"invalid_payload"}),
    ("set_presence", {"activity": "a\udfffb"}, {"invalid_payload"}),
    ("set_presence", {"data": {"k": "\ud800"}}, {"invalid_payload"}),
    ("set_presence", {"data": {"\udc00": 1}}, {"invalid_payload"}),
    ("set_status", {}, {"invalid_payload"}),
    ("set_status", {"status": "away"}, {"invalid_payload"}),
    ("set_status", {"status": "offline"}, {"invalid_payload"}),
    ("set_status", {"status": ["busy"]}, {"invalid_payload"}),
    ("set_status", {"status": {"busy": 1}}, {"invalid_payload"}),
    ("set_status", {"status": "Busy"}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "text": 5}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "text": 0}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "text": []}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "text": False}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "text": "x" * 101}, {"too_large"}),
    ("set_status", {"status": "busy", "text": "\ud800"}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "expires_in": 0}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "expires_in": -5}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "expires_in": True}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "expires_in": "60"}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "expires_in": 10**12}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "expires_in": 2**80}, {"invalid_payload"}),
    ("set_status", {"status": "busy", "expires_in": [60]}, {"invalid_payload"}),
]

#: Frames whose JSON Python reads but no value of which may be stored.
ODD_JSON = [
    '{"type": "set_status", "data": {"status": "busy", "expires_in": NaN}}',
    '{"type": "set_status", "data": {"status": "busy", "expires_in": Infinity}}',
    '{"type": "set_status", "data": {"status": "busy", "expires_in": -Infinity}}',
    '{"type": "set_presence", "data": {"data": {"x": NaN}}}',
    '{"type": "set_presence", "data": {"data": {"x": Infinity}}}',
    '{"type": "set_presence", "data": "web"}',
    '{"type": "set_status", "data": null}',
    '{"type": "activity", "data": []}',
]


async def test_bad_input_is_refused_and_the_socket_stays_usable(
    users: list[Any], configure: Any
) -> None:
    alice, bob, *_ = users
    configure(RATE_LIMIT_RATE=None, USER_RATE_LIMIT_RATE=None)  # many frames, at once
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    for type, data, codes in BAD_INPUT:
        assert await error_code(bob_tab, type, data) in codes, (type, data)
        await assert_usable(bob_tab)
    for text in ODD_JSON:
        await bob_tab.send_to(text_data=text)
        frame = await receive(bob_tab)
        assert frame["type"] == "error", (text, frame)
        assert frame["data"]["code"] in {"invalid_payload", "too_large"}, (text, frame)
        await assert_usable(bob_tab)
    await nothing_more(watcher)  # nothing was stored
    await nothing_more(bob_tab)  # no status frame either
    mine = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert (mine.state, mine.status, mine.devices, mine.activities) == (
        "online",
        "available",
        (),
        (),
    )
    # A connection that never set anything may be left out of ``connections``.
    empty = {"device": "", "activity": "", "data": {}}
    assert all(c == empty for c in mine.connections.values()), mine.connections
    # Good requests after the bad ones work.
    await request(bob_tab, "set_presence", {"device": "web"})
    await next_frame(bob_tab, "ack")
    assert (await status(watcher))["devices"] == ["web"]
    await request(
        bob_tab, "set_status", {"status": "busy", "text": None, "expires_in": 366 * 86400}
    )
    await next_frame(bob_tab, "status")
    assert (await status(watcher))["state"] == "busy"
    await close_all(bob_tab, watcher)


async def test_deep_data_is_refused_and_never_a_server_error(users: list[Any]) -> None:
    tab = await open_socket(users[1])
    for depth in (500, 3000):
        nested = '{"a":' * depth + "1" + "}" * depth
        await tab.send_to(text_data='{"type": "set_presence", "data": {"data": ' + nested + "}}")
        frame = await receive(tab)
        assert frame["type"] == "error", frame
        assert frame["data"]["code"] in {"invalid_payload", "too_large", "invalid_json"}, frame
    # Nested deeply but small: within the limits, so it is stored.
    nested = '{"a":' * 20 + "1" + "}" * 20
    await tab.send_to(text_data='{"type": "set_presence", "data": {"data": ' + nested + "}}")
    assert (await receive(tab))["type"] == "ack"
    await assert_usable(tab)
    await tab.disconnect()


async def test_activity_request_is_acked(users: list[Any]) -> None:
    tab = await open_socket(users[1])
    await request(tab, "activity", {}, id="a")
    assert await next_frame(tab, "ack") == {"request": "activity", "id": "a"}
    await request(tab, "activity")
    await nothing_more(tab)
    await tab.disconnect()


# -- idle --------------------------------------------------------------------------------------


async def test_idle_turns_away_and_activity_brings_back(users: list[Any], configure: Any) -> None:
    alice, bob, *_ = users
    idle_after = 0.6
    configure(IDLE_AFTER=idle_after, ACTIVITY_WRITE_INTERVAL=0.1, HEARTBEAT_INTERVAL=0.1)
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    assert (await watch(watcher, bob))["states"][str(bob.pk)]["state"] == "online"
    started = time.monotonic()
    away = await status(watcher, timeout=5)
    assert away["state"] == "away"
    assert away["is_online"] is True
    # Not before IDLE_AFTER (minus the subscribe).
    assert time.monotonic() - started >= idle_after / 2
    mine = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert mine.state == "away"
    await request(bob_tab, "activity")
    back = await status(watcher, timeout=2)
    assert (back["state"], back["is_online"]) == ("online", True)
    assert back["seq"] > away["seq"]
    # One each way: the next frame is, at the earliest, the next time he idles.
    assert await watcher.receive_nothing(timeout=idle_after / 2)
    # Away again; opening another tab counts as activity.
    assert (await status(watcher, timeout=5))["state"] == "away"
    second = await open_socket(bob)
    frame = await status(watcher, timeout=2)
    assert (frame["state"], frame["is_online"]) == ("online", True)
    assert await watcher.receive_nothing(timeout=0.3)
    await close_all(second, bob_tab, watcher)


async def test_an_in_call_connection_never_turns_away(users: list[Any], configure: Any) -> None:
    alice, bob, *_ = users
    configure(IDLE_AFTER=0.3, ACTIVITY_WRITE_INTERVAL=0.1, HEARTBEAT_INTERVAL=0.1)
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    await request(bob_tab, "set_presence", {"activity": "in_call"})
    frame = await status(watcher)
    assert (frame["state"], frame["activities"]) == ("online", ["in_call"])
    await nothing_more(watcher, 1.2)  # four times IDLE_AFTER, twelve beats
    assert (await user_online_service.aget_presence([bob.pk]))[bob.pk].state == "online"
    # The call ends: he has been idle for long, so he is away at once (one change).
    await request(bob_tab, "set_presence", {"activity": None})
    await next_frame(bob_tab, "ack")
    frame = await status(watcher)
    assert (frame["state"], frame["activities"]) == ("away", [])
    await nothing_more(watcher)
    await close_all(bob_tab, watcher)


async def test_busy_beats_away(users: list[Any], configure: Any) -> None:
    alice, bob, *_ = users
    configure(IDLE_AFTER=0.3, HEARTBEAT_INTERVAL=0.2)
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    await request(bob_tab, "set_status", {"status": "busy"})
    await next_frame(bob_tab, "status")
    assert (await status(watcher))["state"] == "busy"
    await nothing_more(watcher, 1.0)  # idle, but busy says more than away
    # Available again after being idle that long: away at once, not online first.
    await request(bob_tab, "set_status", {"status": "available"})
    await next_frame(bob_tab, "status")
    assert (await status(watcher))["state"] == "away"
    await nothing_more(watcher)
    await close_all(bob_tab, watcher)


async def test_idle_after_zero_never_turns_away(users: list[Any], configure: Any) -> None:
    alice, bob, *_ = users
    configure(IDLE_AFTER=0, HEARTBEAT_INTERVAL=0.2)
    watcher, bob_tab = await open_socket(alice), await open_socket(bob)
    await watch(watcher, bob)
    await nothing_more(watcher, 1.0)
    assert (await user_online_service.aget_presence([bob.pk]))[bob.pk].state == "online"
    await close_all(bob_tab, watcher)


# -- the service -------------------------------------------------------------------------------


async def test_get_presence_for_each_kind_of_viewer(users: list[Any], configure: Any) -> None:
    alice, bob, carol, admin = users
    configure(POLICY=f"{__name__}.WardPolicy")
    bob_tab = await open_socket(bob, "device=mobile")
    await request(bob_tab, "set_presence", {"activity": "in_call", "data": {"room": 12}}, id=1)
    await next_frame(bob_tab, "ack")
    await user_online_service.aset_status(bob.pk, "busy", text="Surgery", expires_in=3600)
    await next_frame(bob_tab, "status")

    full = (await user_online_service.aget_presence([bob.pk, carol.pk]))[bob.pk]
    assert (full.state, full.is_online, full.status, full.status_text) == (
        "busy",
        True,
        "busy",
        "Surgery",
    )
    assert (full.devices, full.activities) == (("mobile",), ("in_call",))
    assert full.status_expires_at is not None
    assert 3500 < (full.status_expires_at.timestamp() - time.time()) <= 3600
    assert full.seq > 0
    assert list(full.connections.values()) == [
        {"device": "mobile", "activity": "in_call", "data": {"room": 12}}
    ]
    offline = (await user_online_service.aget_presence([carol.pk]))[carol.pk]
    assert (offline.state, offline.is_online, offline.connections) == ("offline", False, {})

    own = (await user_online_service.aget_presence([bob.pk], viewer=bob))[bob.pk]
    assert dataclasses.replace(own, status_expires_at=None, last_active=None) == (
        dataclasses.replace(full, status_expires_at=None, last_active=None)
    )
    assert own.status_expires_at is not None
    assert abs((own.status_expires_at - full.status_expires_at).total_seconds()) < 0.1
    assert (await user_online_service.aget_presence([bob.pk], viewer=admin))[bob.pk].devices == (
        "mobile",
    )
    bare = (await user_online_service.aget_presence([bob.pk], viewer=alice))[bob.pk]
    assert (bare.state, bare.is_online, bare.seq) == ("busy", True, full.seq)
    assert (bare.devices, bare.activities, bare.status_text, bare.status) == ((), (), "", "")
    assert (bare.connections, bare.last_active, bare.status_expires_at) == ({}, None, None)

    # carol may not watch bob: he is left out; she still sees herself.
    as_carol = await user_online_service.aget_presence([bob.pk, carol.pk], viewer=carol)
    assert list(as_carol) == [carol.pk]
    assert as_carol[carol.pk].state == "offline"
    await bob_tab.disconnect()


def test_sync_get_presence_and_server_set_presence(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    """A server-set presence holds the user online with no socket, until its TTL."""
    bob = get_user_model().objects.create_user(username="bob")
    alice = get_user_model().objects.create_user(username="alice")
    # Settings first: a change of settings builds a new backend (an empty memory one).
    with override_settings(DJANGO_PRESENCE={**presence, "POLICY": PRESENCE_ONLY}):
        _server_set_presence(bob, alice, signal_log)


def _server_set_presence(bob: Any, alice: Any, signal_log: SignalLog) -> None:
    user_online_service.set_presence(bob.pk, ttl=0.5, device="mobile")
    assert user_online_service.is_user_online(bob.pk)
    found = user_online_service.get_presence([bob.pk])[bob.pk]
    assert (found.state, found.is_online, found.devices) == ("online", True, ("mobile",))
    seen = user_online_service.get_presence([bob.pk], viewer=alice)[bob.pk]
    assert (seen.state, seen.devices) == ("online", ())
    assert signal_log.of(bob.pk) == ["online"]
    time.sleep(0.7)
    user_online_service.sweep()
    user_online_service.sweep()
    assert not user_online_service.is_user_online(bob.pk)
    assert user_online_service.get_presence([bob.pk])[bob.pk].state == "offline"
    assert signal_log.of(bob.pk) == ["online", "offline"]
    # Renewed before the TTL: stays online; cleared: offline at once.
    user_online_service.set_presence(bob.pk, ttl=0.5)
    time.sleep(0.3)
    user_online_service.set_presence(bob.pk, ttl=0.5)
    time.sleep(0.3)
    user_online_service.sweep()
    assert user_online_service.is_user_online(bob.pk)
    user_online_service.clear_presence(bob.pk)
    assert not user_online_service.is_user_online(bob.pk)
    assert signal_log.of(bob.pk) == ["online", "offline", "online", "offline"]
    user_online_service.clear_presence(bob.pk)  # nothing to clear: nothing happens
    assert signal_log.of(bob.pk) == ["online", "offline", "online", "offline"]
    # NaN or infinity would be a lease that never expires (memory) or a Redis error.
    for bad in (0, -1, True, "5", float("nan"), float("inf"), 1e308, 367 * 86400):
        with pytest.raises(ValueError, match="ttl"):
            user_online_service.set_presence(bob.pk, ttl=bad)
    with pytest.raises(ValueError, match="name"):
        user_online_service.set_presence(bob.pk, ttl=5, name="no spaces")


async def test_server_set_presence_reaches_watchers(users: list[Any], configure: Any) -> None:
    alice, bob, *_ = users
    configure(HEARTBEAT_INTERVAL=0.2)
    watcher = await open_socket(alice)  # a connection: the runtime beats and sweeps
    await watch(watcher, bob)
    await user_online_service.aset_presence(bob.pk, ttl=0.6, device="mobile", name="push")
    frame = await status(watcher)
    assert (frame["state"], frame["devices"]) == ("online", ["mobile"])
    # A socket of his meanwhile keeps him online after the server-set presence ends.
    offline = await status(watcher, timeout=5)
    assert (offline["state"], offline["is_online"]) == ("offline", False)
    await user_online_service.aset_presence(bob.pk, ttl=30, device="mobile", name="push")
    assert (await status(watcher))["state"] == "online"
    bob_tab = await open_socket(bob, "device=web")
    assert (await status(watcher))["devices"] == ["mobile", "web"]
    await user_online_service.aclear_presence(bob.pk, name="push")
    assert (await status(watcher))["devices"] == ["web"]
    await close_all(bob_tab, watcher)


async def test_service_status_and_connection_data_checks(users: list[Any]) -> None:
    _, bob, *_ = users
    tab = await open_socket(bob)
    with pytest.raises(ValueError, match="status"):
        await user_online_service.aset_status(bob.pk, "away")
    with pytest.raises(ValueError, match="text"):
        await user_online_service.aset_status(bob.pk, "busy", text="x" * 101)
    for bad in (0, -1, True, float("nan")):
        with pytest.raises(ValueError, match="expire"):
            await user_online_service.aset_status(bob.pk, "busy", expires_in=bad)
    # Further than a year: refused, rather than stored where no datetime can say it.
    for bad in (367 * 86400, 1e12, 1e308, float("inf")):
        with pytest.raises(ValueError, match="at most"):
            await user_online_service.aset_status(bob.pk, "busy", expires_in=bad)
    far = datetime.now(dt_timezone.utc) + timedelta(days=400 * 365)
    with pytest.raises(ValueError, match="at most"):
        await user_online_service.aset_status(bob.pk, "busy", until=far)
    soon = datetime.now(dt_timezone.utc) + timedelta(days=365)
    await user_online_service.aset_status(bob.pk, "busy", until=soon)
    assert await next_frame(tab, "status") == {
        "status": "busy",
        "text": "",
        "expires_in": pytest.approx(365 * 86400, abs=5),
    }
    found = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert found.status == "busy"
    assert found.status_expires_at is not None
    assert abs((found.status_expires_at - soon).total_seconds()) < 5
    await user_online_service.aset_status(bob.pk, "available")
    await next_frame(tab, "status")
    with pytest.raises(ValueError, match="device"):
        await user_online_service.aset_connection_data(bob.pk, "some-id", device="x" * 40)
    # An unknown connection changes nothing.
    await user_online_service.aset_connection_data(bob.pk, "not-a-connection", device="web")
    found = (await user_online_service.aget_presence([bob.pk]))[bob.pk]
    assert (found.status, found.devices) == ("available", ())
    await nothing_more(tab)  # no status frame for the refused calls
    await tab.disconnect()


async def test_presence_changed_once_per_change_in_seq_order(
    users: list[Any], presence_log: PresenceLog, signal_log: SignalLog
) -> None:
    _, bob, *_ = users
    tab = await open_socket(bob, "device=web")
    await request(tab, "set_presence", {"activity": "reading"})
    await next_frame(tab, "ack")
    await request(tab, "set_status", {"status": "busy", "text": "focus"})
    await next_frame(tab, "status")
    await request(tab, "set_status", {"status": "busy", "text": "focus"})  # no change
    await next_frame(tab, "status")
    await request(tab, "set_status", {"status": "invisible"})
    await next_frame(tab, "status")
    await request(tab, "set_presence", {"activity": "hidden work"})  # others see nothing
    await next_frame(tab, "ack")
    await request(tab, "set_status", {"status": "available"})
    await next_frame(tab, "status")
    await tab.disconnect()
    await wait_for(lambda: _ready(signal_log, bob.pk, 2))
    assert presence_log.of(bob.pk) == [
        ("online", ("web",), (), ""),
        ("online", ("web",), ("reading",), ""),
        ("busy", ("web",), ("reading",), "focus"),
        ("offline", (), (), ""),
        ("online", ("web",), ("hidden work",), ""),
        ("offline", (), (), ""),
    ]
    seqs = presence_log.seqs(bob.pk)
    assert seqs == sorted(set(seqs))
    # The transitions share their seq with the presence change that goes with them.
    online_seq = presence_log.seqs(bob.pk)[0]
    with signal_log._lock:
        transition_seqs = [seq for _, user, seq in signal_log.events if user == bob.pk]
    assert transition_seqs == [online_seq, seqs[-1]]


async def _ready(signal_log: SignalLog, user_id: Any, count: int) -> bool:
    return len(signal_log.of(user_id)) >= count


async def test_concurrent_changes_end_in_the_state_get_presence_reads(
    users: list[Any], configure: Any
) -> None:
    alice, bob, *_ = users
    configure(PRESENCE_UPDATE_PERIOD=1)
    watcher = await open_socket(alice)
    tabs = [await open_socket(bob, f"device=d{i}") for i in range(5)]
    await watch(watcher, bob)
    devices = ["web", "mobile", "desktop", "tv"]

    async def churn(index: int, tab: WebsocketCommunicator) -> None:
        for step in range(4):
            await request(
                tab,
                "set_presence",
                {"device": devices[(index + step) % 4], "activity": f"a{index}-{step}"},
            )
            await request(tab, "activity")
            await asyncio.sleep(0.005 * ((index + step) % 3))
        if index % 2:
            await tab.disconnect()

    async def server_side() -> None:
        for step in range(10):
            await user_online_service.aset_status(
                bob.pk, ("busy", "available")[step % 2], text=f"s{step}"
            )

    await asyncio.gather(*(churn(i, t) for i, t in enumerate(tabs)), server_side())
    frames = await drain(watcher, quiet=1.5, limit=200)
    assert frames
    assert all(f["type"] == "status_changed" for f in frames)
    assert all(f["data"]["is_online"] for f in frames)  # never a flap: tabs stayed open
    seqs = [f["data"]["seq"] for f in frames]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    last = frames[-1]["data"]
    truth = (await user_online_service.aget_presence([bob.pk], viewer=alice))[bob.pk]
    assert (last["state"], last["devices"], last["activities"], last["status_text"]) == (
        truth.state,
        list(truth.devices),
        list(truth.activities),
        truth.status_text,
    )
    assert last["seq"] == truth.seq
    assert len(truth.connections) == 3
    await close_all(*tabs[::2], watcher)


# -- two servers -------------------------------------------------------------------------------


@pytest.fixture
async def two_servers(redis_url: str) -> AsyncIterator[list[Any]]:
    """Redis presence and two channel layers on one Redis (tests/test_multi_server.py)."""
    from .conftest import presence_settings_for

    prefix = f"asgi-{uuid.uuid4().hex[:10]}"
    with override_settings(
        CHANNEL_LAYERS={
            "default": layer_config(redis_url, prefix),
            "server2": layer_config(redis_url, prefix),
        },
        DJANGO_PRESENCE=presence_settings_for("redis", redis_url),
    ):
        model = get_user_model()
        yield [await model.objects.acreate(username=n) for n in ("alice", "bob")]
        for alias in ("default", "server2"):
            await get_channel_layer(alias).flush()
        await get_backend().clear()
    channel_layers.backends.clear()


async def test_busy_set_on_one_server_reaches_a_watcher_on_the_other_once(
    two_servers: list[Any],
) -> None:
    alice, bob = two_servers
    watcher = await connect(alice, 2)
    bob1, bob2 = await connect(bob, 1), await connect(bob, 2)
    await watch(watcher, bob)
    await request(bob1, "set_status", {"status": "busy", "text": "Ward round"}, id=1)
    assert (await next_frame(bob1, "status"))["status"] == "busy"
    assert await next_frame(bob2, "status") == {
        "status": "busy",
        "text": "Ward round",
        "expires_in": None,
    }
    frame = await status(watcher)
    assert (frame["state"], frame["status_text"]) == ("busy", "Ward round")
    await nothing_more(watcher, 0.5)  # exactly once
    await request(bob2, "set_presence", {"activity": "in_call"})
    await next_frame(bob2, "ack")
    assert (await status(watcher))["activities"] == ["in_call"]
    await nothing_more(watcher)
    await close_all(bob1, bob2, watcher)


async def test_one_beat_turns_away_more_users_than_one_sweep_takes(
    configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users who went idle together are all shown away at the next beat, not over many."""
    from django_presence import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "SWEEP_LIMIT", 5)
    configure(IDLE_AFTER=0.3, HEARTBEAT_INTERVAL=60)
    keys = [str(900_000 + i) for i in range(23)]  # over four sweeps' worth
    announced: list[tuple[Any, str]] = []

    def record(sender: Any, user_id: Any, state: str, **kwargs: Any) -> None:
        announced.append((user_id, state))

    signals.presence_changed.connect(record)
    try:
        for key in keys:
            await user_online_service.aadd_user_connection(key)
        announced.clear()
        await asyncio.sleep(0.5)
        await runtime_module.get_runtime().beat()
        # Each user announced away once, by this one beat (what watchers are told, not
        # what a read derives).
        assert sorted(announced) == sorted((int(key), "away") for key in keys)
    finally:
        signals.presence_changed.disconnect(record)
        for key in keys:
            await user_online_service.acleanup_user_connections(key)
