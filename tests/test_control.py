"""disconnect_user: closing a user's sockets wherever they are, on logout and password change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from django_presence.protocol import CLOSE_DISCONNECTED
from django_presence.services import user_online_service

from .conftest import redis_channel_layer_config
from .test_mixin import open_socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["memory-layer", "redis-layer"])
def layer(
    request: pytest.FixtureRequest, presence: dict[str, Any], redis_url: str
) -> Iterator[None]:
    if request.param == "memory-layer":
        config = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    else:
        config = redis_channel_layer_config(redis_url)
    with override_settings(CHANNEL_LAYERS={"default": config}):
        yield
    channel_layers.backends.clear()


async def test_disconnect_user_closes_every_socket_of_that_user_only(layer: None) -> None:
    alice = await get_user_model().objects.acreate(username="alice")
    bob = await get_user_model().objects.acreate(username="bob")
    alice_tabs = [await open_socket(alice), await open_socket(alice)]
    bob_tab = await open_socket(bob)

    assert await user_online_service.adisconnect_user(alice.pk) == 2

    for tab in alice_tabs:
        assert await tab.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": CLOSE_DISCONNECTED,
        }
    assert not await user_online_service.ais_user_online(alice.pk)
    await alice.arefresh_from_db()
    assert not alice.is_online
    # Bob's socket is untouched and still answers.
    await bob_tab.send_to(text_data="still here")
    assert await bob_tab.receive_from() == "echo:still here"
    assert await user_online_service.ais_user_online(bob.pk)
    for tab in [*alice_tabs, bob_tab]:
        await tab.disconnect()


async def test_logging_out_closes_the_users_sockets(redis_layer: None) -> None:
    user = await sync_to_async(get_user_model().objects.create_user)("carol", password="pw-1")
    tab = await open_socket(user)
    client = Client()
    assert await sync_to_async(client.login)(username="carol", password="pw-1")
    await sync_to_async(client.logout)()
    assert await tab.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": CLOSE_DISCONNECTED,
    }
    await tab.disconnect()


async def test_changing_the_password_closes_the_users_sockets(redis_layer: None) -> None:
    user = await sync_to_async(get_user_model().objects.create_user)("dan", password="pw-1")
    tab = await open_socket(user)

    # Saving the user for another reason leaves the socket alone.
    user.first_name = "Dan"
    await user.asave()
    assert await tab.receive_nothing(timeout=0.3)

    def change_password() -> None:
        user.set_password("pw-2")
        user.save()

    await sync_to_async(change_password)()
    assert await tab.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": CLOSE_DISCONNECTED,
    }
    await tab.disconnect()


async def test_the_receivers_follow_their_settings(
    redis_layer: None, presence: dict[str, Any]
) -> None:
    user = await sync_to_async(get_user_model().objects.create_user)("erin", password="pw-1")
    tab = await open_socket(user)
    with override_settings(
        DJANGO_PRESENCE={
            **presence,
            "DISCONNECT_ON_LOGOUT": False,
            "DISCONNECT_ON_PASSWORD_CHANGE": False,
        }
    ):
        client = Client()
        assert await sync_to_async(client.login)(username="erin", password="pw-1")
        await sync_to_async(client.logout)()

        def change_password() -> None:
            user.set_password("pw-2")
            user.save()

        await sync_to_async(change_password)()
        assert await tab.receive_nothing(timeout=0.5)
    await tab.disconnect()


async def test_the_presence_disconnect_command_closes_the_users_sockets(
    redis_layer: None,
) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    user = await get_user_model().objects.acreate(username="fay")
    tabs = [await open_socket(user), await open_socket(user)]
    out = StringIO()
    await sync_to_async(call_command)("presence", "disconnect", "fay", stdout=out)
    assert out.getvalue() == f"Disconnected user {user.pk} (2 connections).\n"
    for tab in tabs:
        assert await tab.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": CLOSE_DISCONNECTED,
        }
        await tab.disconnect()
    # By primary key too, and a clear error for nobody.
    await sync_to_async(call_command)("presence", "disconnect", str(user.pk), stdout=out)
    with pytest.raises(CommandError, match="No user with primary key or username 'nobody'"):
        await sync_to_async(call_command)("presence", "disconnect", "nobody")
