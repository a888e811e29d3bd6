"""The ws/user/ consumer on two "servers": two channels_redis layers on one Redis.

Each server is a separate ``RedisChannelLayer`` instance (its own connections and
receive loop, as in another process) sharing one Redis and one key prefix, with the Redis
presence backend, as in production. Consumers on server 2 use the second layer; the
messaging service sends through the first.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence import groups, transitions
from django_presence.backends import get_backend
from django_presence.consumers import UserConsumer
from django_presence.middleware import JWTAuthMiddlewareStack
from django_presence.runtime import get_runtime
from django_presence.services import user_messaging_service, user_online_service

from .test_user_consumer import TIMEOUT, nothing_more, receive, receive_type, request
from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)


class Server2Consumer(UserConsumer):
    """The same consumer, served by the second server's channel layer."""

    channel_layer_alias = "server2"


def layer_config(redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8's 5 s socket_timeout breaks channels_redis's idle blocking receive
        # (django/channels_redis#422): give it more than that.
        "CONFIG": {
            "hosts": [{"address": redis_url, "socket_timeout": 30}],
            "prefix": prefix,
            "capacity": 2000,
        },
    }


@pytest.fixture
async def servers(redis_url: str) -> AsyncIterator[None]:
    """Redis presence and two channel layers on one Redis, under private prefixes."""
    from .conftest import presence_settings_for

    prefix = f"asgi-{uuid.uuid4().hex[:10]}"
    with (
        override_settings(
            CHANNEL_LAYERS={
                "default": layer_config(redis_url, prefix),
                "server2": layer_config(redis_url, prefix),
            },
            DJANGO_PRESENCE=presence_settings_for("redis", redis_url),
        ),
    ):
        assert get_channel_layer("default") is not get_channel_layer("server2")
        yield
        for alias in ("default", "server2"):
            await get_channel_layer(alias).flush()
        await get_backend().clear()
    channel_layers.backends.clear()


async def connect(user: Any, server: int) -> WebsocketCommunicator:
    consumer = UserConsumer if server == 1 else Server2Consumer
    communicator = WebsocketCommunicator(
        JWTAuthMiddlewareStack(consumer.as_asgi()), f"/ws/user/?token={make_token(user.pk)}"
    )
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


@pytest.fixture
async def people(servers: None) -> list[Any]:
    model = get_user_model()
    return [await model.objects.acreate(username=n) for n in ("alice", "bob", "carol")]


async def test_tabs_on_two_servers_each_get_notifications_and_dms(people: list[Any]) -> None:
    alice, bob, _ = people
    tab1, tab2 = await connect(alice, 1), await connect(alice, 2)
    sender = await connect(bob, 2)
    await user_messaging_service.send_notification_to_user(alice.pk, "Hi", "from server code")
    for tab in (tab1, tab2):
        assert (await receive_type(tab, "notification"))["data"]["title"] == "Hi"
    await request(sender, "direct_message", {"target_user_id": alice.pk, "message": "yo"})
    for tab in (tab1, tab2):
        frame = await receive_type(tab, "direct_message")
        assert (frame["data"]["from_user_id"], frame["data"]["message"]) == (bob.pk, "yo")
    await user_messaging_service.broadcast_system_message("all servers")
    for tab in (tab1, tab2, sender):
        assert (await receive_type(tab, "system_broadcast"))["data"]["message"] == "all servers"
    for tab in (tab1, tab2, sender):
        await tab.disconnect()


async def test_rooms_span_servers(people: list[Any]) -> None:
    alice, bob, _ = people
    a, b = await connect(alice, 1), await connect(bob, 2)
    await request(a, "join_group", {"group": "ops"})
    await receive_type(a, "group_joined")
    await request(b, "join_group", {"group": "ops"})
    assert sorted((await receive_type(b, "group_joined"))["data"]["members_online"]) == sorted(
        [alice.pk, bob.pk]
    )
    assert (await receive_type(a, "group_presence"))["data"]["user_id"] == bob.pk
    await request(a, "group_message", {"group": "ops", "message": "across"})
    for tab in (a, b):
        frame = await receive_type(tab, "group_message")
        assert frame["data"] == {"group": "ops", "from_user_id": alice.pk, "message": "across"}
    await b.disconnect()
    frame = await receive_type(a, "group_presence")
    assert frame["data"] == {"group": "ops", "user_id": bob.pk, "joined": False, "count": 1}
    await a.disconnect()


async def test_members_of_a_crashed_server_leave_after_their_lease(people: list[Any]) -> None:
    """A server that dies never says goodbye; the survivors' sweep announces the leave."""
    alice, bob, _ = people
    a = await connect(alice, 1)
    await request(a, "join_group", {"group": "crash"})
    await receive_type(a, "group_joined")
    # Bob's membership as a crashed server left it: a lease nobody refreshes.
    backend = get_backend()
    change = await backend.room_join("crash", str(bob.pk), "dead-server-conn", ttl=0.3)
    await transitions.announce_member_change(change)
    assert (await receive_type(a, "group_presence"))["data"]["joined"] is True
    await asyncio.sleep(0.4)
    await get_runtime().beat()  # what the periodic task does every interval
    frame = await receive_type(a, "group_presence")
    assert frame["data"] == {"group": "crash", "user_id": bob.pk, "joined": False, "count": 1}
    assert (await backend.room_members("crash"))[0] == [str(alice.pk)]
    await a.disconnect()


async def test_status_changes_reach_watchers_on_the_other_server(people: list[Any]) -> None:
    alice, bob, _ = people
    watcher = await connect(alice, 1)
    await request(watcher, "subscribe_presence", {"user_ids": [bob.pk]})
    assert (await receive(watcher))["data"]["users"] == {str(bob.pk): False}
    bob_tab = await connect(bob, 2)
    frame = await receive_type(watcher, "status_changed")
    assert (frame["data"]["user_id"], frame["data"]["is_online"]) == (bob.pk, True)
    second = await connect(bob, 1)  # a second tab, on the other server: no transition
    await nothing_more(watcher)
    await bob_tab.disconnect()
    await second.disconnect()
    frame = await receive_type(watcher, "status_changed")
    assert (frame["data"]["user_id"], frame["data"]["is_online"]) == (bob.pk, False)
    await nothing_more(watcher)
    await watcher.disconnect()


async def test_snapshot_then_ordered_diffs_under_concurrent_transitions(
    people: list[Any],
) -> None:
    """Transitions racing a subscription: the state the client derives equals the backend's.

    Many users go online and offline from both servers while a watcher subscribes; the
    watcher applies ``presence_state`` then every ``status_changed`` in order, and must end
    with exactly the backend's state, every change it received newer than what it knew.
    """
    model = get_user_model()
    targets = [await model.objects.acreate(username=f"t{i}") for i in range(12)]
    rng = random.Random(3)

    async def churn(user: Any) -> None:
        for _ in range(6):
            await user_online_service.aadd_user_connection(user.pk, f"c-{user.pk}")
            await asyncio.sleep(rng.random() * 0.01)
            await user_online_service.aremove_user_connection(user.pk, f"c-{user.pk}", grace=0)
            await asyncio.sleep(rng.random() * 0.01)
        if rng.random() < 0.5:
            await user_online_service.aadd_user_connection(user.pk, f"c-{user.pk}")

    watcher = await connect(people[0], 2)
    churning = asyncio.gather(*(churn(user) for user in targets))
    await asyncio.sleep(0.02)  # subscribe in the middle of the churn
    await request(watcher, "subscribe_presence", {"user_ids": [u.pk for u in targets]})
    state = (await receive_type(watcher, "presence_state"))["data"]["users"]
    await churning
    expected = {str(u.pk): await user_online_service.ais_user_online(u.pk) for u in targets}
    last_seq: dict[str, int] = {}
    received = 0
    # Bounded: at most one event per transition (12 users, at most 13 transitions each).
    while not await watcher.receive_nothing(timeout=1.0):
        received += 1
        assert received <= 12 * 13
        frame = await receive_type(watcher, "status_changed")
        key = str(frame["data"]["user_id"])
        assert frame["data"]["seq"] > last_seq.get(key, 0)  # in order, never repeated
        assert frame["data"]["is_online"] != state[key]  # each one is a real transition
        last_seq[key] = frame["data"]["seq"]
        state[key] = frame["data"]["is_online"]
    assert state == expected
    await nothing_more(watcher, 0.5)
    await watcher.disconnect()


async def test_user_groups_are_named_alike_on_every_server(people: list[Any]) -> None:
    """A group_send from plain server code reaches consumers of both layers."""
    alice, *_ = people
    tab1, tab2 = await connect(alice, 1), await connect(alice, 2)
    await get_channel_layer("server2").group_send(
        groups.user_group(alice.pk),
        {"type": "presence.notification", "title": "raw", "message": "m", "extra": {}},
    )
    for tab in (tab1, tab2):
        assert (await receive_type(tab, "notification"))["data"]["title"] == "raw"
    await tab1.disconnect()
    await tab2.disconnect()
