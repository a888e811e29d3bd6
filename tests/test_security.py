"""Safe by default: what an attacker with one valid account can no longer do.

Each test is one finding of the attack run of the "safe by default" issue, replayed
against the package: it failed before the change and passes after it, on both backends
where the backend matters.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.test import override_settings

from django_presence import metrics, protocol
from django_presence.backends import get_backend
from django_presence.consumers.subscriptions import Subscriptions
from django_presence.services import user_online_service
from tests.asgi import application

from .test_user_consumer import (
    assert_usable,
    close_all,
    nothing_more,
    open_socket,
    receive,
    receive_type,
    request,
)
from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()
PRIVATE = "django_presence.policies.DefaultPolicy"


@pytest.fixture
async def users(presence: dict[str, Any]) -> list[Any]:
    """alice, bob and carol, on both backends."""
    return [await User.objects.acreate(username=name) for name in ("alice", "bob", "carol")]


async def closed_with(communicator: WebsocketCommunicator, timeout: float = 1.0) -> int:
    """The close code the client receives within ``timeout`` seconds (the issue's bound)."""
    output = await communicator.receive_output(timeout=timeout)
    assert output["type"] == "websocket.close", output
    return int(output["code"])


# -- 1. bounded users ------------------------------------------------------------------------


async def test_a_user_over_max_connections_per_user_is_refused_with_4009(
    users: list[Any], presence: dict[str, Any]
) -> None:
    alice, bob, _ = users
    metrics.reset()
    with override_settings(DJANGO_PRESENCE={**presence, "MAX_CONNECTIONS_PER_USER": 2}):
        tabs = [await open_socket(alice), await open_socket(alice)]
        third = WebsocketCommunicator(application, f"/ws/user/?token={make_token(alice.pk)}")
        connected, _ = await third.connect()
        assert connected  # accepted, so that a browser sees the code...
        assert await closed_with(third) == protocol.CLOSE_TOO_MANY_CONNECTIONS  # ...then closed
        assert await user_online_service.aget_user_connection_count(alice.pk) == 2
        for tab in tabs:
            await assert_usable(tab)
        other = await open_socket(bob)  # another user is not affected
        await assert_usable(other)
        await tabs[0].disconnect()
        replacement = await open_socket(alice)  # a slot freed by a close is usable again
        await assert_usable(replacement)
        await close_all(tabs[1], replacement, other)
    assert metrics.snapshot()['connections_refused{reason="user"}'] == 1


async def test_concurrent_connects_never_exceed_the_limit(backend: Any) -> None:
    """The check and the store are one atomic backend step."""
    changes = await asyncio.gather(
        *(backend.add_connection("7", f"c{i}", ttl=30, limit=5) for i in range(40))
    )
    assert sum(1 for c in changes if not c.refused) == 5
    assert all(c.connection_count == 5 for c in changes if c.refused)
    assert await backend.connection_count("7") == 5
    # A connection already stored is refreshed, never refused; a closing lease is not
    # counted against the limit.
    stored = next(f"c{i}" for i, c in enumerate(changes) if not c.refused)
    assert not (await backend.add_connection("7", stored, ttl=30, limit=5)).refused
    await backend.add_connection("8", "only", ttl=30, limit=1)
    await backend.remove_connection("8", "only", grace=30)
    assert not (await backend.add_connection("8", "next", ttl=30, limit=1)).refused


async def test_a_process_over_max_connections_per_process_refuses_with_4009(
    users: list[Any], presence: dict[str, Any]
) -> None:
    alice, bob, _ = users
    with override_settings(DJANGO_PRESENCE={**presence, "MAX_CONNECTIONS_PER_PROCESS": 1}):
        first = await open_socket(alice)
        second = WebsocketCommunicator(application, f"/ws/user/?token={make_token(bob.pk)}")
        assert (await second.connect())[0]
        assert await closed_with(second) == protocol.CLOSE_TOO_MANY_CONNECTIONS
        assert not await user_online_service.ais_user_online(bob.pk)
        await assert_usable(first)
        await first.disconnect()


# -- 2. private by default -------------------------------------------------------------------


@pytest.fixture
def private(presence: dict[str, Any]) -> Any:
    with override_settings(DJANGO_PRESENCE={**presence, "POLICY": PRIVATE}):
        yield


async def test_the_default_policy_shows_nobody_else(private: Any, users: list[Any]) -> None:
    alice, bob, _ = users
    watcher, target = await open_socket(alice), await open_socket(bob)
    await request(watcher, "subscribe_presence", {"user_ids": [bob.pk]}, id=1)
    assert (await receive_type(watcher, "error"))["data"]["code"] == "forbidden"
    await request(watcher, "subscribe_presence", {"user_ids": [alice.pk]}, id=2)
    assert (await receive_type(watcher, "presence_state"))["data"]["users"] == {
        str(alice.pk): True
    }
    await request(watcher, "join_group", {"group": "ward-3"}, id=3)
    assert (await receive_type(watcher, "error"))["data"]["code"] == "forbidden"
    await close_all(watcher, target)


async def test_direct_messages_cannot_probe_which_ids_exist(
    private: Any, users: list[Any]
) -> None:
    alice, bob, _ = users
    tab = await open_socket(alice)
    replies = []
    for target in (bob.pk, 999_999):  # a real user, and an id nobody has
        await request(tab, "direct_message", {"target_user_id": target, "message": "x"}, id=1)
        replies.append((await receive_type(tab, "error"))["data"])
    assert (
        replies[0]
        == replies[1]
        == {
            "code": "forbidden",
            "message": "You may not message this user.",
        }
    )
    await tab.disconnect()


def test_the_open_policy_in_production_is_a_warning(presence: dict[str, Any]) -> None:
    open_policy = {**presence, "POLICY": "django_presence.policies.OpenPolicy"}
    with override_settings(DEBUG=False, DJANGO_PRESENCE=open_policy):
        ids = [m.id for m in run_checks() if m.id and m.id.startswith("django_presence")]
    assert "django_presence.W005" in ids
    with override_settings(DEBUG=False, DJANGO_PRESENCE={**presence, "POLICY": PRIVATE}):
        ids = [m.id for m in run_checks() if m.id and m.id.startswith("django_presence")]
    assert "django_presence.W005" not in ids


# -- 3. revocation ---------------------------------------------------------------------------


async def test_deactivating_a_user_closes_their_sockets_within_a_second(
    users: list[Any],
) -> None:
    alice, bob, _ = users
    tabs = [await open_socket(alice), await open_socket(alice)]
    other = await open_socket(bob)
    alice.is_active = False
    await database_sync_to_async(alice.save)()
    for tab in tabs:
        assert await closed_with(tab) == protocol.CLOSE_REVOKED
    assert not await user_online_service.ais_user_online(alice.pk)
    await assert_usable(other)
    # And the token they still hold no longer opens a socket.
    again = WebsocketCommunicator(application, f"/ws/user/?token={make_token(alice.pk)}")
    assert (await again.connect())[0] is False
    await other.disconnect()


async def test_deleting_a_user_closes_their_sockets(users: list[Any]) -> None:
    alice, bob, _ = users
    tab = await open_socket(alice)
    await request(tab, "direct_message", {"target_user_id": bob.pk, "message": "hi"}, id=1)
    assert (await receive(tab))["type"] == "ack"
    await database_sync_to_async(alice.delete)()
    assert await closed_with(tab) == protocol.CLOSE_REVOKED
    assert await get_backend().user_connections(str(alice.pk)) == []


async def test_a_queryset_delete_revokes_too(users: list[Any]) -> None:
    alice, *_ = users
    tab = await open_socket(alice)
    await database_sync_to_async(User.objects.filter(pk=alice.pk).delete)()
    assert await closed_with(tab) == protocol.CLOSE_REVOKED


async def test_revocation_can_be_turned_off(users: list[Any], presence: dict[str, Any]) -> None:
    alice, *_ = users
    with override_settings(DJANGO_PRESENCE={**presence, "DISCONNECT_ON_DEACTIVATE": False}):
        tab = await open_socket(alice)
        alice.is_active = False
        await database_sync_to_async(alice.save)()
        await nothing_more(tab)
        await tab.disconnect()


# -- 5. subscriptions forget what was unsubscribed --------------------------------------------


def test_unsubscribing_forgets_everything_about_the_user() -> None:
    subscriptions = Subscriptions()
    for i in range(1000):
        subscriptions.watch(str(i))
        subscriptions.snapshot(str(i), True, 10)
        list(subscriptions.resync({str(i): (False, 20)}))  # a pending resync for each
    for i in range(1000):
        assert subscriptions.forget(str(i))
    assert len(subscriptions) == 0
    assert vars(subscriptions) == {"_seq": {}, "_online": {}, "_pending": {}}
    # Watched again: nothing of the old state survives (the first status is sent).
    subscriptions.watch("5")
    assert subscriptions.update("5", True, 1)


# -- 6. input that cannot be stored or encoded ------------------------------------------------


@pytest.mark.parametrize(
    "user_id",
    ["9223372036854775808", "-9223372036854775809", 9223372036854775808, "99999999999999999999"],
)
async def test_ids_beyond_the_database_range_are_invalid_payload(
    users: list[Any], user_id: Any
) -> None:
    alice, *_ = users
    tab = await open_socket(alice)
    for frame in (
        ("subscribe_presence", {"user_ids": [user_id]}),
        ("direct_message", {"target_user_id": user_id, "message": "x"}),
    ):
        await request(tab, *frame, id="x")
        assert (await receive_type(tab, "error"))["data"]["code"] == "invalid_payload"
    await assert_usable(tab)
    await tab.disconnect()


async def test_lone_surrogates_are_invalid_payload_on_the_redis_layer(
    users: list[Any], redis_layer: None
) -> None:
    alice, bob, _ = users
    tab, target = await open_socket(alice), await open_socket(bob)
    await request(tab, "join_group", {"group": "g"}, id=0)
    await receive_type(tab, "group_joined")
    for frame in (
        ("direct_message", {"target_user_id": bob.pk, "message": "x\ud800y"}),
        ("group_message", {"group": "g", "message": "x\udfffy"}),
        ("broadcast", {"message": "\ud83d"}),
    ):
        await request(tab, *frame, id="s")
        assert (await receive_type(tab, "error"))["data"]["code"] == "invalid_payload"
    await nothing_more(target)
    await assert_usable(tab)
    await close_all(tab, target)


# -- 7. token claims -------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["float", "true", "leading zero", "space", "list"])
async def test_a_signed_token_names_a_user_only_by_an_exact_id(
    users: list[Any], claim: str
) -> None:
    alice, *_ = users
    value = {
        "float": alice.pk + 0.9,
        "true": True,
        "leading zero": f"0{alice.pk}",
        "space": f" {alice.pk}",
        "list": [alice.pk],
    }[claim]
    communicator = WebsocketCommunicator(application, f"/ws/user/?token={make_token(value)}")
    connected, code = await communicator.connect()
    assert (connected, code) == (False, protocol.CLOSE_UNAUTHENTICATED)
    for exact in (alice.pk, str(alice.pk)):
        ok = WebsocketCommunicator(application, f"/ws/user/?token={make_token(exact)}")
        assert (await ok.connect())[0]
        await ok.disconnect()
