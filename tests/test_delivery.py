"""Recoverable delivery through the ws/user/ consumer: offsets, replay, catch-up, acks, fallback.

Each test runs on both shipped backends (Redis: a real server). A "reconnect" is a new
WebsocketCommunicator whose URL names the positions the previous one reached, exactly
what presence.js does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence import delivery
from django_presence.backends import get_backend
from django_presence.runtime import get_runtime
from django_presence.services import user_messaging_service
from django_presence.signals import message_undelivered
from tests.asgi import application

from .test_user_consumer import TIMEOUT, request
from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)

send = user_messaging_service.send_notification_to_user


@pytest.fixture
async def alice(presence: dict[str, Any]) -> Any:
    return await get_user_model().objects.acreate(username="alice")


async def connect(user: Any, query: str = "recover=1") -> WebsocketCommunicator:
    """A ws/user/ socket of ``user``, with ``query`` appended to the URL."""
    url = f"/ws/user/?token={make_token(user.pk)}" + (f"&{query}" if query else "")
    communicator = WebsocketCommunicator(application, url)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def frames(tab: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    return [await tab.receive_json_from(timeout=TIMEOUT) for _ in range(count)]


def since(stream: str, frame: dict[str, Any]) -> str:
    """The ``since`` parameter for the position ``frame`` reached in ``stream``."""
    return f"since={quote(stream)}:{frame['epoch']}:{frame['offset']}"


def messages(received: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["message"] for f in received]


async def test_stored_messages_carry_their_stream_position(alice: Any) -> None:
    tab = await connect(alice, "")
    sent = [await send(alice.pk, "t", f"m{i}") for i in range(3)]
    received = await frames(tab, 3)
    assert [(f["stream"], f["offset"]) for f in received] == [("user", n) for n in (1, 2, 3)]
    assert [d.offset for d in sent] == [1, 2, 3]
    assert {f["epoch"] for f in received} == {sent[0].epoch}
    assert all("replayed" not in f for f in received)
    await user_messaging_service.broadcast_system_message("all")
    (broadcast,) = await frames(tab, 1)
    assert (broadcast["stream"], broadcast["offset"]) == ("broadcast", 1)
    await tab.disconnect()


async def test_a_reconnecting_client_gets_what_it_missed_once_in_order(alice: Any) -> None:
    tab = await connect(alice)
    (recovery,) = await frames(tab, 1)
    assert recovery["type"] == "recovery"
    position = recovery["data"]["streams"]["user"]
    assert (position["offset"], position["since"], position["replayed"]) == (0, 0, 0)
    await send(alice.pk, "t", "seen")
    (seen,) = await frames(tab, 1)
    await tab.disconnect()
    for i in range(5):
        await send(alice.pk, "t", f"missed {i}")

    tab = await connect(alice, since("user", seen))
    recovery, *replayed = await frames(tab, 6)
    assert recovery == {
        "type": "recovery",
        "data": {
            "streams": {
                "user": {
                    "epoch": seen["epoch"],
                    "offset": 6,
                    "since": 1,
                    "recovered": True,
                    "replayed": 5,
                },
                "broadcast": recovery["data"]["streams"]["broadcast"],
            }
        },
    }
    assert messages(replayed) == [f"missed {i}" for i in range(5)]
    assert [f["offset"] for f in replayed] == [2, 3, 4, 5, 6]
    assert all(f["replayed"] is True for f in replayed)
    await send(alice.pk, "t", "live")
    (live,) = await frames(tab, 1)
    assert (live["offset"], live["data"]["message"]) == (7, "live")
    assert await tab.receive_nothing(timeout=0.2)
    await tab.disconnect()


async def test_a_message_sent_as_the_socket_opens_is_delivered(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client with no position yet gets what is sent once it sees the socket open.

    The notification is sent right after the server accepts, before it has read where
    the streams are: a position read then would count the message as sent already.
    """
    from django_presence.consumers import UserConsumer

    accept = UserConsumer.accept

    async def accept_then_send(self: Any, *args: Any, **kwargs: Any) -> None:
        await accept(self, *args, **kwargs)
        await send(alice.pk, "t", "as it opened")

    monkeypatch.setattr(UserConsumer, "accept", accept_then_send)
    tab = await connect(alice)
    recovery, live = await frames(tab, 2)
    assert recovery["data"]["streams"]["user"]["offset"] == 0
    assert (live["offset"], live["data"]["message"]) == (1, "as it opened")
    assert await tab.receive_nothing(timeout=0.2)
    await tab.disconnect()


async def test_a_client_that_asks_nothing_gets_no_recovery_frame(alice: Any) -> None:
    await send(alice.pk, "t", "before")
    tab = await connect(alice, "")
    assert await tab.receive_nothing(timeout=0.2)
    await tab.disconnect()


async def test_a_lost_epoch_is_said_never_papered_over(alice: Any) -> None:
    await send(alice.pk, "t", "one")
    tab = await connect(alice, "since=user:0badc0de:1")
    recovery, replayed = await frames(tab, 2)
    user = recovery["data"]["streams"]["user"]
    assert (user["recovered"], user["since"], user["replayed"]) == (False, 0, 1)
    assert user["epoch"] != "0badc0de"
    assert replayed["data"]["message"] == "one"
    await tab.disconnect()


async def test_trimmed_history_says_not_recovered_and_replays_what_is_left(
    alice: Any, presence: dict[str, Any]
) -> None:
    with override_settings(DJANGO_PRESENCE={**presence, "HISTORY_SIZE": 3}):
        first = await send(alice.pk, "t", "m0")
        for i in range(1, 6):
            await send(alice.pk, "t", f"m{i}")
        tab = await connect(alice, f"since=user:{first.epoch}:1")
        recovery, *replayed = await frames(tab, 4)
        user = recovery["data"]["streams"]["user"]
        assert (user["recovered"], user["since"], user["offset"]) == (False, 3, 6)
        assert messages(replayed) == ["m3", "m4", "m5"]
        await tab.disconnect()


async def test_ephemeral_messages_are_neither_positioned_nor_replayed(alice: Any) -> None:
    tab = await connect(alice, "")
    sent = await send(alice.pk, "typing", "…", store=False)
    assert (sent.stored, sent.offset) == (False, None)
    (frame,) = await frames(tab, 1)
    assert set(frame) == {"type", "data"}
    await tab.disconnect()
    tab = await connect(alice, "recover=1")
    (recovery,) = await frames(tab, 1)
    assert recovery["data"]["streams"]["user"]["offset"] == 0
    assert await tab.receive_nothing(timeout=0.2)
    await tab.disconnect()


async def test_history_off_is_at_most_once_as_before(alice: Any, presence: dict[str, Any]) -> None:
    with override_settings(DJANGO_PRESENCE={**presence, "HISTORY_SIZE": 0}):
        tab = await connect(alice, "recover=1")
        sent = await send(alice.pk, "t", "m")
        assert not sent.stored
        (frame,) = await frames(tab, 1)
        assert frame == {"type": "notification", "data": {"title": "t", "message": "m"}}
        await tab.disconnect()


async def test_broadcasts_are_recovered_from_their_one_stream(alice: Any) -> None:
    bob = await get_user_model().objects.acreate(username="bob")
    await user_messaging_service.broadcast_system_message("first")
    tab = await connect(alice, "")
    await user_messaging_service.broadcast_system_message("second")
    (second,) = await frames(tab, 1)
    await tab.disconnect()
    await user_messaging_service.broadcast_system_message("third")
    for user in (alice, bob):
        tab = await connect(user, since("broadcast", second))
        recovery, third = await frames(tab, 2)
        assert recovery["data"]["streams"]["broadcast"]["recovered"] is True
        assert (third["stream"], third["data"]["message"]) == ("broadcast", "third")
        await tab.disconnect()


async def test_a_rejoined_group_replays_what_it_missed_after_the_reply(alice: Any) -> None:
    tab = await connect(alice, "")
    await request(tab, "join_group", {"group": "ward-3"}, id="j")
    (joined,) = await frames(tab, 1)
    assert "stream" not in joined["data"]
    await user_messaging_service.send_to_group("ward-3", "seen")
    (seen,) = await frames(tab, 1)
    assert (seen["stream"], seen["offset"]) == ("group:ward-3", 1)
    await tab.disconnect()
    await user_messaging_service.send_to_group("ward-3", "missed")

    tab = await connect(alice, "")
    position = {"epoch": seen["epoch"], "offset": seen["offset"]}
    await request(tab, "join_group", {"group": "ward-3", "since": position}, id="j")
    joined, missed = await frames(tab, 2)
    assert joined["type"] == "group_joined"
    assert joined["data"]["stream"] == {
        "epoch": seen["epoch"],
        "offset": 2,
        "since": 1,
        "recovered": True,
        "replayed": 1,
    }
    assert (missed["type"], missed["data"]["message"], missed["offset"]) == (
        "group_message",
        "missed",
        2,
    )
    # Joining again replays nothing: the connection follows the stream already.
    await request(tab, "join_group", {"group": "ward-3", "since": position}, id="again")
    (again,) = await frames(tab, 1)
    assert (again["type"], "stream" in again["data"]) == ("group_joined", False)
    assert await tab.receive_nothing(timeout=0.2)
    await request(tab, "join_group", {"group": "ward-3", "since": "yesterday"}, id="bad")
    (error,) = await frames(tab, 1)
    assert (error["type"], error["data"]["code"]) == ("error", "invalid_payload")
    await tab.disconnect()


async def test_a_message_the_layer_dropped_is_caught_up_before_the_next(alice: Any) -> None:
    tab = await connect(alice, "")
    await send(alice.pk, "t", "first")
    await frames(tab, 1)
    # Stored, but never sent over the channel layer: what a dropped message looks like.
    await delivery.publish(delivery.user_stream(str(alice.pk)), _event("dropped"))
    await send(alice.pk, "t", "next")
    received = await frames(tab, 2)
    assert [(f["offset"], f["data"]["message"]) for f in received] == [(2, "dropped"), (3, "next")]
    assert await tab.receive_nothing(timeout=0.2)
    await tab.disconnect()


async def test_the_beat_catches_up_a_dropped_last_message_and_a_lost_history(
    alice: Any,
) -> None:
    tab = await connect(alice, "recover=1")
    await frames(tab, 1)
    await delivery.publish(delivery.user_stream(str(alice.pk)), _event("dropped"))
    await get_runtime().beat()
    (caught,) = await frames(tab, 1)
    assert (caught["offset"], caught["data"]["message"]) == (1, "dropped")
    # The backend loses everything (a Redis restarted empty): the next beat says so.
    await get_backend().clear()
    await get_runtime().beat()
    (recovery,) = await frames(tab, 1)
    user = recovery["data"]["streams"]["user"]
    assert (recovery["type"], user["recovered"]) == ("recovery", False)
    assert user["epoch"] != caught["epoch"]
    await send(alice.pk, "t", "after")
    (after,) = await frames(tab, 1)
    assert (after.get("epoch"), after.get("offset")) == (user["epoch"], 1), after
    await tab.disconnect()


async def test_acks_and_what_a_user_has_not_received(alice: Any) -> None:
    tab = await connect(alice, "")
    for i in range(3):
        await send(alice.pk, "t", f"m{i}")
    received = await frames(tab, 3)
    epoch = received[0]["epoch"]
    await get_runtime().beat()  # records what was delivered
    assert await user_messaging_service.aget_pending_messages(alice.pk) == []
    unacked = await user_messaging_service.aget_pending_messages(alice.pk, unacknowledged=True)
    assert messages(unacked) == ["m0", "m1", "m2"]
    await request(tab, "ack", {"stream": "user", "epoch": epoch, "offset": 2}, id="a")
    (ack,) = await frames(tab, 1)
    assert ack == {"type": "ack", "data": {"request": "ack"}, "id": "a"}
    unacked = await user_messaging_service.aget_pending_messages(alice.pk, unacknowledged=True)
    assert messages(unacked) == ["m2"]
    await tab.disconnect()
    await send(alice.pk, "t", "while away")
    pending = await user_messaging_service.aget_pending_messages(alice.pk)
    assert messages(pending) == ["while away"]


@pytest.mark.parametrize(
    "data",
    [
        {"epoch": "x", "offset": 99},  # never sent on this connection
        {"epoch": "x", "offset": -1},
        {"epoch": "x", "offset": "two"},
        {"epoch": 5, "offset": 1},
        {"stream": "broadcast", "epoch": "x", "offset": 1},
        {"offset": 1},
    ],
)
async def test_bad_acks_get_a_clear_error_and_change_nothing(alice: Any, data: Any) -> None:
    tab = await connect(alice, "")
    await send(alice.pk, "t", "m")
    (frame,) = await frames(tab, 1)
    data = {k: frame["epoch"] if v == "x" else v for k, v in data.items()}
    await request(tab, "ack", data, id="a")
    (error,) = await frames(tab, 1)
    assert (error["type"], error["data"]["code"], error["id"]) == ("error", "invalid_payload", "a")
    unacked = await user_messaging_service.aget_pending_messages(alice.pk, unacknowledged=True)
    assert messages(unacked) == ["m"]
    await tab.disconnect()


@pytest.mark.parametrize(
    "query",
    [
        "since=user",
        "since=user:e:notanumber",
        "since=user:e:-3",
        "since=nosuchstream:e:1",
        "since=user::1",
        "since=" + "user:" + "e" * 500 + ":1",
        "since=user:e:99999999999999999999999",
        "recover=maybe",
    ],
)
async def test_malformed_positions_are_ignored(alice: Any, query: str) -> None:
    await send(alice.pk, "t", "m")
    tab = await connect(alice, query)
    received = await frames(tab, 1) if "recover=maybe" not in query else []
    if received:
        assert received[0]["type"] == "recovery"
    await request(tab, "ping", id="p")
    (pong,) = await frames(tab, 1)
    assert pong["type"] == "pong"
    await tab.disconnect()


async def test_undelivered_messages_are_handed_over_once(
    alice: Any, presence: dict[str, Any]
) -> None:
    got: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        got.append(kwargs)

    message_undelivered.connect(receiver)
    try:
        with override_settings(DJANGO_PRESENCE={**presence, "UNDELIVERED_AFTER": 0.2}):
            tab = await connect(alice, "")
            await send(alice.pk, "t", "shown")
            (shown,) = await frames(tab, 1)
            await request(tab, "ack", {"epoch": shown["epoch"], "offset": shown["offset"]})
            await tab.disconnect()
            await send(alice.pk, "Your call", "The doctor is ready", room=7)
            await asyncio.sleep(0.3)
            # Several servers take the due messages at once: each is handed over once.
            counts = await asyncio.gather(
                *(user_messaging_service.ahand_over_undelivered() for _ in range(4))
            )
            assert sorted(counts) == [0, 0, 0, 1]
            assert await user_messaging_service.ahand_over_undelivered() == 0
    finally:
        message_undelivered.disconnect(receiver)
    (item,) = got
    assert item["user_id"] == alice.pk
    assert item["offset"] == 2
    assert item["message"]["type"] == "notification"
    assert item["message"]["data"] == {
        "title": "Your call",
        "message": "The doctor is ready",
        "room": 7,
    }
    assert item["sent_at"].tzinfo is not None
    json.dumps(item["message"])


async def test_a_user_who_comes_back_and_acks_in_time_gets_no_fallback(
    alice: Any, presence: dict[str, Any]
) -> None:
    got: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        got.append(kwargs)

    message_undelivered.connect(receiver)
    try:
        with override_settings(DJANGO_PRESENCE={**presence, "UNDELIVERED_AFTER": 0.5}):
            first = await send(alice.pk, "t", "while offline")
            tab = await connect(alice, f"since=user:{first.epoch}:0")
            _, replayed = await frames(tab, 2)
            await request(tab, "ack", {"epoch": replayed["epoch"], "offset": replayed["offset"]})
            await asyncio.sleep(0.6)
            assert await user_messaging_service.ahand_over_undelivered() == 0
            await tab.disconnect()
    finally:
        message_undelivered.disconnect(receiver)
    assert got == []


def test_services_return_the_delivery_and_validate_store(alice: Any) -> None:
    sent = user_messaging_service.send_notification_to_user_sync(alice.pk, "t", "m")
    assert (sent.stream, sent.offset, sent.stored) == (f"user:{alice.pk}", 1, True)
    again = user_messaging_service.send_message_to_user_sync(alice.pk, alice.pk, "hi")
    assert (again.offset, again.epoch) == (2, sent.epoch)
    assert user_messaging_service.send_to_group_sync("g", "m").stream == "group:g"
    assert user_messaging_service.broadcast_system_message_sync("b").stream == "broadcast"
    with pytest.raises(TypeError, match="store must be True or False"):
        user_messaging_service.send_notification_to_user_sync(alice.pk, "t", "m", store="no")
    assert messages(user_messaging_service.get_pending_messages(alice.pk)) == ["m", "hi"]


def _event(message: str) -> dict[str, Any]:
    return {"type": "presence.notification", "title": "t", "message": message, "extra": {}}
