"""The ws/user/ consumer through WebsocketCommunicator: every frame type and error code.

Most tests go through ``tests.asgi.application`` (the real JWT middleware and routing);
some run the consumer alone with ``scope["user"]`` set, as a project with its own
authentication middleware would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.consumers import UserConsumer
from django_presence.policies import DefaultPolicy
from django_presence.protocol import CLOSE_UNAUTHENTICATED
from django_presence.services import user_messaging_service, user_online_service
from tests.asgi import application

from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5

#: What a watcher allowed to see details is told of a plain online user.
ONLINE_VIEW = {"state": "online", "devices": [], "activities": [], "status_text": ""}


# -- helpers, also used by the other test modules of the consumer ----------------------------


async def open_socket(user: Any, consumer: Any = None) -> WebsocketCommunicator:
    """A connected communicator for ``user``: through the JWT app, or ``consumer`` alone."""
    if consumer is None:
        communicator = WebsocketCommunicator(application, f"/ws/user/?token={make_token(user.pk)}")
    else:
        communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/user/")
        communicator.scope["user"] = user
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def request(
    communicator: WebsocketCommunicator,
    type: str,
    data: dict[str, Any] | None = None,
    id: Any = None,
) -> None:
    """Send one request frame."""
    frame: dict[str, Any] = {"type": type}
    if data is not None:
        frame["data"] = data
    if id is not None:
        frame["id"] = id
    await communicator.send_json_to(frame)


#: The fields a stored message's frame carries (tests/test_delivery.py checks them).
POSITION = ("stream", "offset", "epoch")


async def receive(communicator: WebsocketCommunicator, timeout: float = TIMEOUT) -> Any:
    """The next frame sent to the client, without a stored message's stream position."""
    frame = await communicator.receive_json_from(timeout=timeout)
    for key in POSITION:
        frame.pop(key, None)
    return frame


async def receive_type(
    communicator: WebsocketCommunicator, type: str, timeout: float = TIMEOUT
) -> Any:
    """The next frame of ``type``, failing on any other frame first."""
    frame = await receive(communicator, timeout)
    assert frame["type"] == type, frame
    return frame


async def nothing_more(communicator: WebsocketCommunicator, timeout: float = 0.3) -> None:
    """Assert that the client receives nothing within ``timeout`` seconds."""
    assert await communicator.receive_nothing(timeout=timeout), await receive(communicator)


async def assert_usable(communicator: WebsocketCommunicator) -> None:
    """The connection still answers a ping."""
    await request(communicator, "ping", id="still-there")
    assert await receive(communicator) == {"type": "pong", "data": {}, "id": "still-there"}


async def close_all(*communicators: WebsocketCommunicator) -> None:
    """Disconnect every communicator (ignoring those already closed)."""
    for communicator in communicators:
        await communicator.disconnect()


@pytest.fixture
async def users(presence: dict[str, Any]) -> list[Any]:
    """Three users (alice, bob, carol) and a staff user (admin), on both backends."""
    model = get_user_model()
    created = [
        await model.objects.acreate(username=name) for name in ("alice", "bob", "carol")
    ] + [await model.objects.acreate(username="admin", is_staff=True)]
    return created


# -- connection ------------------------------------------------------------------------------


async def test_anonymous_connection_is_refused_before_accept(presence: dict[str, Any]) -> None:
    communicator = WebsocketCommunicator(application, "/ws/user/")
    connected, code = await communicator.connect(timeout=TIMEOUT)
    assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)


async def test_consumer_alone_with_scope_user(users: list[Any]) -> None:
    alice = users[0]
    tab = await open_socket(alice, UserConsumer)
    await assert_usable(tab)
    await user_messaging_service.send_notification_to_user(alice.pk, "t", "m")
    assert (await receive_type(tab, "notification"))["data"] == {"title": "t", "message": "m"}
    await tab.disconnect()


async def test_ping_pong_echoes_string_and_integer_ids(users: list[Any]) -> None:
    tab = await open_socket(users[0])
    await request(tab, "ping")
    assert await receive(tab) == {"type": "pong", "data": {}}
    await request(tab, "ping", id=7)
    assert await receive(tab) == {"type": "pong", "data": {}, "id": 7}
    await request(tab, "ping", {}, id="abc")
    assert await receive(tab) == {"type": "pong", "data": {}, "id": "abc"}
    await tab.disconnect()


# -- messaging -------------------------------------------------------------------------------


async def test_user_with_two_tabs_receives_each_notification_and_dm_on_both(
    users: list[Any],
) -> None:
    alice, bob, *_ = users
    tab1, tab2, sender = await open_socket(alice), await open_socket(alice), await open_socket(bob)
    await user_messaging_service.send_notification_to_user(
        alice.pk, "New", "You have mail", url="/inbox/", count=3
    )
    for tab in (tab1, tab2):
        assert await receive(tab) == {
            "type": "notification",
            "data": {"title": "New", "message": "You have mail", "url": "/inbox/", "count": 3},
        }
    await request(sender, "direct_message", {"target_user_id": alice.pk, "message": "hello"})
    for tab in (tab1, tab2):
        frame = await receive_type(tab, "direct_message")
        assert frame["data"]["from_user_id"] == bob.pk
        assert frame["data"]["message"] == "hello"
        assert frame["data"]["sent_at"].endswith("+00:00")
    await nothing_more(sender)
    await nothing_more(tab1)
    await close_all(tab1, tab2, sender)


async def test_direct_message_sender_cannot_be_spoofed(users: list[Any]) -> None:
    alice, bob, carol, _ = users
    target, liar = await open_socket(alice), await open_socket(bob)
    await request(
        liar,
        "direct_message",
        {"target_user_id": alice.pk, "message": "from carol, honest", "from_user_id": carol.pk},
        id="m1",
    )
    assert await receive(liar) == {
        "type": "ack",
        "data": {"request": "direct_message"},
        "id": "m1",
    }
    frame = await receive_type(target, "direct_message")
    assert frame["data"]["from_user_id"] == bob.pk
    await close_all(target, liar)


async def test_direct_message_to_string_id_reaches_integer_user(users: list[Any]) -> None:
    alice, bob, *_ = users
    target, sender = await open_socket(alice), await open_socket(bob)
    await request(sender, "direct_message", {"target_user_id": str(alice.pk), "message": "x"})
    assert (await receive_type(target, "direct_message"))["data"]["message"] == "x"
    await close_all(target, sender)


async def test_direct_message_errors(users: list[Any]) -> None:
    alice, *_ = users
    tab = await open_socket(alice)
    cases = [
        ({"target_user_id": 987654, "message": "x"}, "not_found"),
        ({"target_user_id": "nope", "message": "x"}, "invalid_payload"),
        ({"target_user_id": True, "message": "x"}, "invalid_payload"),
        ({"target_user_id": 2**70, "message": "x"}, "invalid_payload"),
        ({"target_user_id": [1], "message": "x"}, "invalid_payload"),
        ({"target_user_id": alice.pk}, "invalid_payload"),
        ({"target_user_id": alice.pk, "message": ""}, "invalid_payload"),
        ({"target_user_id": alice.pk, "message": {"text": "x"}}, "invalid_payload"),
    ]
    for index, (data, code) in enumerate(cases):
        await request(tab, "direct_message", data, id=index)
        frame = await receive_type(tab, "error")
        assert frame["id"] == index
        assert frame["data"]["code"] == code, (data, frame)
        assert frame["data"]["message"]
    await assert_usable(tab)
    await tab.disconnect()


async def test_broadcast_is_for_staff_only(users: list[Any]) -> None:
    alice, bob, _, admin = users
    staff, tab_a, tab_b = (
        await open_socket(admin),
        await open_socket(alice),
        await open_socket(bob),
    )
    await request(tab_a, "broadcast", {"message": "everyone, listen"}, id=1)
    assert (await receive(tab_a))["data"]["code"] == "forbidden"
    await nothing_more(tab_b)
    await request(staff, "broadcast", {"message": "maintenance at noon"}, id=2)
    expected = {"type": "system_broadcast", "data": {"message": "maintenance at noon"}}
    # The staff user's own socket is connected too, so it gets the broadcast and the ack.
    staff_frames = [await receive(staff), await receive(staff)]
    assert expected in staff_frames
    assert {"type": "ack", "data": {"request": "broadcast"}, "id": 2} in staff_frames
    for tab in (tab_a, tab_b):
        assert await receive(tab) == expected
    await close_all(staff, tab_a, tab_b)


async def test_service_broadcast_and_group_message_carry_extra_fields(users: list[Any]) -> None:
    alice, *_ = users
    tab = await open_socket(alice)
    await user_messaging_service.broadcast_system_message("restart", level="warning")
    assert await receive(tab) == {
        "type": "system_broadcast",
        "data": {"message": "restart", "level": "warning"},
    }
    await request(tab, "join_group", {"group": "news"})
    await receive_type(tab, "group_joined")
    await user_messaging_service.send_to_group("news", "headline", link="/n/1")
    assert await receive(tab) == {
        "type": "group_message",
        "data": {"group": "news", "from_user_id": None, "message": "headline", "link": "/n/1"},
    }
    await tab.disconnect()


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "invalid_json"),
        (" ", "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "too_large"),
        ("[" * 30_000 + "]" * 30_000, "invalid_json"),  # nested past the recursion limit
        ("[1, 2]", "invalid_payload"),
        ('"ping"', "invalid_payload"),
        ("null", "invalid_payload"),
        ('{"data": {}}', "invalid_payload"),
        ('{"type": 5}', "invalid_payload"),
        ('{"type": "ping", "data": []}', "invalid_payload"),
        ('{"type": "ping", "id": {"a": 1}}', "invalid_payload"),
        ('{"type": "ping", "id": true}', "invalid_payload"),
        ('{"type": "ping", "id": "' + "x" * 65 + '"}', "invalid_payload"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "Ping"}', "unknown_type"),
        ('{"type": "__init__"}', "unknown_type"),
        ('{"type": "dispatch_request"}', "unknown_type"),
        ('{"type": "presence_status"}', "unknown_type"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_connection_survives(
    users: list[Any], text: str, code: str
) -> None:
    alice, bob, *_ = users
    tab, other = await open_socket(alice), await open_socket(bob)
    await tab.send_to(text_data=text)
    frame = await receive_type(tab, "error")
    assert frame["data"]["code"] == code
    await assert_usable(tab)
    await nothing_more(other)  # never reaches another user
    await close_all(tab, other)


async def test_unknown_type_echoes_the_request_id(users: list[Any]) -> None:
    tab = await open_socket(users[0])
    await request(tab, "teleport", {}, id="r9")
    frame = await receive(tab)
    assert frame["id"] == "r9"
    assert frame["data"]["code"] == "unknown_type"
    await tab.disconnect()


async def test_binary_frame_is_an_error_not_a_crash(users: list[Any]) -> None:
    tab = await open_socket(users[0])
    await tab.send_to(bytes_data=b"\x00\x01binary")
    assert (await receive_type(tab, "error"))["data"]["code"] == "invalid_payload"
    await assert_usable(tab)
    await tab.disconnect()


async def test_frame_size_limit_counts_utf8_bytes(users: list[Any]) -> None:
    tab = await open_socket(users[0])
    with override_settings(DJANGO_PRESENCE={**users_settings(), "MAX_FRAME_SIZE": 200}):
        small = await open_socket(users[0])
    fits = json.dumps({"type": "ping", "data": {"pad": "x" * 150}})
    assert len(fits.encode()) <= 200
    await small.send_to(text_data=fits)
    await receive_type(small, "pong")
    # Under 200 characters but over 200 bytes: é is two bytes in UTF-8.
    too_big = json.dumps({"type": "ping", "data": {"pad": "é" * 90}}, ensure_ascii=False)
    assert len(too_big) < 200 < len(too_big.encode())
    await small.send_to(text_data=too_big)
    assert (await receive_type(small, "error"))["data"]["code"] == "too_large"
    await assert_usable(small)
    # The default limit is 64 KiB.
    await tab.send_to(text_data=json.dumps({"type": "ping", "data": {"pad": "x" * 65_000}}))
    await receive_type(tab, "pong")
    await tab.send_to(text_data=json.dumps({"type": "ping", "data": {"pad": "x" * 65_537}}))
    assert (await receive_type(tab, "error"))["data"]["code"] == "too_large"
    await close_all(tab, small)


def users_settings() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.DJANGO_PRESENCE)


class BuggyConsumer(UserConsumer):
    """A project's subclass with a request type whose handler has a bug."""

    async def request_explode(self, data: dict[str, Any]) -> None:
        raise RuntimeError("bug in a project handler")

    async def request_echo(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "echo", data


async def test_handler_bug_is_logged_and_answered_with_server_error(
    users: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    tab = await open_socket(users[0], BuggyConsumer)
    await request(tab, "explode", {}, id=3)
    assert await receive(tab) == {
        "type": "error",
        "data": {"code": "server_error", "message": "The server could not handle this message."},
        "id": 3,
    }
    assert "bug in a project handler" in caplog.text
    await request(tab, "echo", {"a": 1}, id=4)
    assert await receive(tab) == {"type": "echo", "data": {"a": 1}, "id": 4}
    await tab.disconnect()


async def test_sends_to_a_closed_socket_do_not_raise(users: list[Any]) -> None:
    """Presence and messages for a socket that just closed are dropped, not raised."""
    consumer = UserConsumer()
    consumer.scope = {"type": "websocket", "user": users[0]}

    async def closed_socket(message: dict[str, Any]) -> None:
        raise OSError("ClientDisconnected")

    consumer.base_send = closed_socket
    await consumer.presence_notification({"title": "t", "message": "m", "extra": {}})
    await consumer.presence_broadcast({"message": "m", "extra": {}})
    await consumer.presence_direct_message({"from_user_id": 1, "message": "m", "sent_at": "now"})
    consumer.subscriptions.watch("5")
    await consumer.presence_status({"user_id": 5, "is_online": True, "last_seen": None, "seq": 3})
    await consumer.receive(text_data="{bad")


# -- groups ----------------------------------------------------------------------------------


async def test_join_group_message_and_leave(users: list[Any]) -> None:
    alice, bob, carol, _ = users
    a, b, c = await open_socket(alice), await open_socket(bob), await open_socket(carol)
    await request(a, "join_group", {"group": "room-1"}, id="j")
    assert await receive(a) == {
        "type": "group_joined",
        "data": {
            "group": "room-1",
            "count": 1,
            "members_online": [alice.pk],
            "states": {str(alice.pk): "online"},
        },
        "id": "j",
    }
    await user_online_service.aset_status(alice.pk, "busy")
    assert (await receive_type(a, "status"))["data"]["status"] == "busy"
    await request(b, "join_group", {"group": "room-1"})
    joined = await receive_type(b, "group_joined")
    assert sorted(joined["data"]["members_online"]) == sorted([alice.pk, bob.pk])
    # Each member's state, derived as everywhere: alice set herself busy.
    assert joined["data"]["states"] == {str(alice.pk): "busy", str(bob.pk): "online"}
    assert await receive(a) == {
        "type": "group_presence",
        "data": {"group": "room-1", "user_id": bob.pk, "joined": True, "count": 2},
    }
    # Only members may send; carol is not one.
    await request(c, "group_message", {"group": "room-1", "message": "let me in"}, id=1)
    assert (await receive(c))["data"]["code"] == "forbidden"
    await request(b, "group_message", {"group": "room-1", "message": "hi room"}, id=2)
    expected = {
        "type": "group_message",
        "data": {"group": "room-1", "from_user_id": bob.pk, "message": "hi room"},
    }
    assert await receive(a) == expected
    b_frames = [await receive(b), await receive(b)]
    assert expected in b_frames
    assert {"type": "ack", "data": {"request": "group_message"}, "id": 2} in b_frames
    await nothing_more(c)
    await request(b, "leave_group", {"group": "room-1"}, id="l")
    assert await receive(b) == {"type": "group_left", "data": {"group": "room-1"}, "id": "l"}
    assert await receive(a) == {
        "type": "group_presence",
        "data": {"group": "room-1", "user_id": bob.pk, "joined": False, "count": 1},
    }
    await request(b, "group_message", {"group": "room-1", "message": "still here?"})
    assert (await receive(b))["data"]["code"] == "forbidden"
    await nothing_more(a)
    # Leaving a group one is not in is answered the same way.
    await request(c, "leave_group", {"group": "room-1"})
    assert (await receive(c))["type"] == "group_left"
    await close_all(a, b, c)


async def test_second_tab_joins_a_group_silently_and_disconnect_leaves(users: list[Any]) -> None:
    alice, bob, *_ = users
    a = await open_socket(alice)
    b1, b2 = await open_socket(bob), await open_socket(bob)
    await request(a, "join_group", {"group": "g"})
    await receive_type(a, "group_joined")
    await request(b1, "join_group", {"group": "g"})
    await receive_type(b1, "group_joined")
    assert (await receive_type(a, "group_presence"))["data"]["joined"] is True
    await request(b2, "join_group", {"group": "g"})
    assert (await receive_type(b2, "group_joined"))["data"]["count"] == 2
    await nothing_more(a)
    await b1.disconnect()
    await nothing_more(a)  # bob is still in the group through his second tab
    await b2.disconnect()
    frame = await receive_type(a, "group_presence")
    assert frame["data"] == {"group": "g", "user_id": bob.pk, "joined": False, "count": 1}
    await a.disconnect()


@pytest.mark.parametrize(
    "group", ["", "x" * 65, "has space", "sl/ash", "ü", None, 5, ["g"], "presence.all"]
)
async def test_invalid_group_names_are_refused(users: list[Any], group: Any) -> None:
    tab = await open_socket(users[0])
    await request(tab, "join_group", {"group": group})
    frame = await receive(tab)
    if group == "presence.all":
        # Valid as a client name, and mapped apart from the package's own group.
        assert frame["type"] == "group_joined"
        await user_messaging_service.broadcast_system_message("to all")
        assert (await receive(tab))["type"] == "system_broadcast"
        await nothing_more(tab)
    else:
        assert frame["data"]["code"] == "invalid_payload"
    await tab.disconnect()


async def test_group_count_only_mode(users: list[Any], presence: dict[str, Any]) -> None:
    alice, bob, carol, admin = users
    with override_settings(DJANGO_PRESENCE={**presence, "GROUP_PRESENCE_MAX_MEMBERS": 2}):
        a, b, c, d = [await open_socket(u) for u in (alice, bob, carol, admin)]
        await request(a, "join_group", {"group": "big"})
        await receive_type(a, "group_joined")
        await request(b, "join_group", {"group": "big"})
        assert (await receive_type(b, "group_joined"))["data"]["count"] == 2
        assert (await receive_type(a, "group_presence"))["data"]["user_id"] == bob.pk
        # carol takes the group over the limit: members switch to counts.
        await request(c, "join_group", {"group": "big"})
        assert (await receive_type(c, "group_joined"))["data"] == {
            "group": "big",
            "count": 3,
            "count_only": True,
        }
        for tab in (a, b):
            assert (await receive_type(tab, "group_presence"))["data"] == {
                "group": "big",
                "count": 3,
                "count_only": True,
            }
        # Further joins of a large group push nothing to anyone.
        await request(d, "join_group", {"group": "big"})
        assert (await receive_type(d, "group_joined"))["data"]["count"] == 4
        await nothing_more(a)
        await nothing_more(c)
        await d.disconnect()
        await nothing_more(a)
        # Back under the limit: members get the member list again.
        await c.disconnect()
        for tab in (a, b):
            frame = await receive_type(tab, "group_presence")
            assert frame["data"]["count"] == 2
            assert sorted(frame["data"]["members_online"]) == sorted([alice.pk, bob.pk])
        await close_all(a, b)


async def test_max_groups_per_connection(users: list[Any], presence: dict[str, Any]) -> None:
    with override_settings(DJANGO_PRESENCE={**presence, "MAX_GROUPS": 2}):
        tab = await open_socket(users[0])
    for name in ("one", "two"):
        await request(tab, "join_group", {"group": name})
        await receive_type(tab, "group_joined")
    await request(tab, "join_group", {"group": "two"})  # joining again is fine
    await receive_type(tab, "group_joined")
    await request(tab, "join_group", {"group": "three"})
    assert (await receive(tab))["data"]["code"] == "forbidden"
    await tab.disconnect()


# -- presence subscriptions ------------------------------------------------------------------


async def test_the_snapshot_says_when_offline_users_were_last_seen(
    users: list[Any], presence: dict[str, Any]
) -> None:
    alice, bob, carol, _ = users
    bob_tab = await open_socket(bob)
    await bob_tab.disconnect()
    await bob.arefresh_from_db()
    assert bob.last_seen is not None
    carol_tab = await open_socket(carol)
    watcher = await open_socket(alice)

    await request(watcher, "subscribe_presence", {"user_ids": [bob.pk, carol.pk, 987654]})
    state = (await receive_type(watcher, "presence_state"))["data"]

    assert state["users"] == {str(bob.pk): False, str(carol.pk): True, "987654": False}
    assert state["last_seen"] == {
        str(bob.pk): bob.last_seen.isoformat(),
        str(carol.pk): None,  # online
        "987654": None,  # no such user
    }
    with override_settings(DJANGO_PRESENCE={**presence, "SYNC_USER_MODEL": False}):
        await request(watcher, "subscribe_presence", {"user_ids": [bob.pk]})
        assert (await receive_type(watcher, "presence_state"))["data"] == {
            "users": {str(bob.pk): False},  # not kept in the DB: no last_seen to say
            "states": {str(bob.pk): {**ONLINE_VIEW, "state": "offline"}},
        }
    await carol_tab.disconnect()
    await watcher.disconnect()


async def test_subscribe_then_status_changes(users: list[Any]) -> None:
    alice, bob, carol, _ = users
    watcher = await open_socket(alice)
    bob_tab = await open_socket(bob)
    await request(watcher, "subscribe_presence", {"user_ids": [bob.pk, carol.pk]}, id="s")
    assert await receive(watcher) == {
        "type": "presence_state",
        "data": {
            "users": {str(bob.pk): True, str(carol.pk): False},
            "states": {
                str(bob.pk): ONLINE_VIEW,
                str(carol.pk): {**ONLINE_VIEW, "state": "offline"},
            },
            "last_seen": {str(bob.pk): None, str(carol.pk): None},  # carol was never online
        },
        "id": "s",
    }
    carol_tab = await open_socket(carol)
    frame = await receive_type(watcher, "status_changed")
    assert frame["data"]["user_id"] == carol.pk
    assert frame["data"]["is_online"] is True
    assert frame["data"]["last_seen"] is None
    # A second tab is no transition.
    carol_tab2 = await open_socket(carol)
    await nothing_more(watcher)
    await carol_tab2.disconnect()
    await nothing_more(watcher)
    await carol_tab.disconnect()
    frame = await receive_type(watcher, "status_changed")
    assert (frame["data"]["user_id"], frame["data"]["is_online"]) == (carol.pk, False)
    assert frame["data"]["last_seen"]
    # Unsubscribed: no more changes.
    await request(watcher, "unsubscribe_presence", {"user_ids": [bob.pk]}, id="u")
    assert await receive(watcher) == {
        "type": "ack",
        "data": {"request": "unsubscribe_presence"},
        "id": "u",
    }
    await bob_tab.disconnect()
    await nothing_more(watcher)
    await watcher.disconnect()


async def test_no_status_changed_within_the_grace_period(
    users: list[Any], presence: dict[str, Any]
) -> None:
    alice, bob, *_ = users
    with override_settings(DJANGO_PRESENCE={**presence, "OFFLINE_GRACE_PERIOD": 30}):
        watcher = await open_socket(alice)
        bob_tab = await open_socket(bob)
        await request(watcher, "subscribe_presence", {"user_ids": [bob.pk]})
        assert (await receive(watcher))["data"]["users"] == {str(bob.pk): True}
        await bob_tab.disconnect()  # a page reload: close, then open again
        bob_tab = await open_socket(bob)
        await nothing_more(watcher, 0.5)
        await close_all(bob_tab, watcher)


async def test_subscribe_errors(users: list[Any], presence: dict[str, Any]) -> None:
    tab = await open_socket(users[0])
    for data in (
        {},
        {"user_ids": []},
        {"user_ids": "1"},
        {"user_ids": [None]},
        {"user_ids": [1.5]},
    ):
        await request(tab, "subscribe_presence", data)
        assert (await receive(tab))["data"]["code"] == "invalid_payload", data
    with override_settings(DJANGO_PRESENCE={**presence, "MAX_WATCHED_USERS": 3}):
        limited = await open_socket(users[0])
        await request(limited, "subscribe_presence", {"user_ids": [1, 2, 3, 4]})
        assert (await receive(limited))["data"]["code"] == "invalid_payload"
        await request(limited, "subscribe_presence", {"user_ids": [1, 2]})
        await receive_type(limited, "presence_state")
        await request(limited, "subscribe_presence", {"user_ids": [2, 3]})
        await receive_type(limited, "presence_state")
        await request(limited, "subscribe_presence", {"user_ids": [4]})
        assert (await receive(limited))["data"]["code"] == "forbidden"
    await close_all(tab, limited)


# -- authorization ---------------------------------------------------------------------------


class LockedDownPolicy(DefaultPolicy):
    """Nobody may do anything, staff included."""

    async def can_message(self, user: Any, target_id: Any) -> bool:
        return False

    async def can_watch(self, user: Any, target_id: Any) -> bool:
        return False

    async def can_join_group(self, user: Any, group: str) -> bool:
        return False

    async def can_broadcast(self, user: Any) -> bool:
        return False


async def test_policy_from_settings_denies_everything(
    users: list[Any], presence: dict[str, Any]
) -> None:
    alice, bob, _, admin = users
    path = f"{__name__}.LockedDownPolicy"
    with override_settings(DJANGO_PRESENCE={**presence, "POLICY": path}):
        tab, staff, target = (
            await open_socket(alice),
            await open_socket(admin),
            await open_socket(bob),
        )
    requests = [
        (tab, "direct_message", {"target_user_id": bob.pk, "message": "x"}),
        # Denied before the existence check: no probing for user ids.
        (tab, "direct_message", {"target_user_id": 424242, "message": "x"}),
        (tab, "subscribe_presence", {"user_ids": [bob.pk]}),
        (tab, "join_group", {"group": "secret"}),
        (staff, "broadcast", {"message": "x"}),
    ]
    for socket, type, data in requests:
        await request(socket, type, data)
        assert (await receive(socket))["data"]["code"] == "forbidden", type
    await nothing_more(target)
    await close_all(tab, staff, target)


class TeamConsumer(UserConsumer):
    """A consumer subclass with its own rules: its policy, plus a method override."""

    class policy_class(DefaultPolicy):  # a class attribute holding a class
        def can_join_group(self, user: Any, group: str) -> bool:  # a sync method works too
            return group.startswith("team-")

    async def can_message(self, target_id: Any) -> bool:
        return bool(target_id != self.user.pk)


async def test_consumer_subclass_policy_and_overrides(users: list[Any]) -> None:
    alice, *_ = users
    tab = await open_socket(alice, TeamConsumer)
    await request(tab, "join_group", {"group": "team-a"})
    await receive_type(tab, "group_joined")
    await request(tab, "join_group", {"group": "other"})
    assert (await receive(tab))["data"]["code"] == "forbidden"
    await request(tab, "direct_message", {"target_user_id": alice.pk, "message": "me"})
    assert (await receive(tab))["data"]["code"] == "forbidden"
    await tab.disconnect()


async def test_disconnect_cleans_up_group_memberships(users: list[Any]) -> None:
    alice, *_ = users
    tab = await open_socket(alice)
    await request(tab, "join_group", {"group": "cleanup"})
    await receive_type(tab, "group_joined")
    await tab.disconnect()
    from django_presence.backends import get_backend
    from django_presence.runtime import get_runtime

    members, _ = await get_backend().room_members("cleanup")
    assert members == []
    assert not get_runtime().memberships
