"""Subscribers catch up on a status_changed the channel layer lost, without pre-empting one
that is merely on its way (the heartbeat's resync of subscriptions)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from django_presence.backends import get_backend
from django_presence.runtime import get_runtime
from django_presence.services import user_online_service

from .test_user_consumer import open_socket, receive_type, request

pytestmark = pytest.mark.django_db(transaction=True)


async def subscribed_watcher(presence: dict[str, Any]) -> tuple[Any, Any]:
    watcher = await get_user_model().objects.acreate(username="watcher")
    watched = await get_user_model().objects.acreate(username="watched")
    socket = await open_socket(watcher)
    await request(socket, "subscribe_presence", {"user_ids": [watched.pk]})
    state = await receive_type(socket, "presence_state")
    assert state["data"]["users"] == {str(watched.pk): False}
    return socket, watched


async def test_a_lost_status_change_arrives_after_two_beats(presence: dict[str, Any]) -> None:
    socket, watched = await subscribed_watcher(presence)
    # A transition whose status_changed never reached this server: the backend knows it,
    # the channel layer delivered nothing.
    await get_backend().add_connection(str(watched.pk), "elsewhere", ttl=30)

    await get_runtime().beat()
    assert await socket.receive_nothing(timeout=0.2)  # its message may still be coming
    await get_runtime().beat()
    frame = await receive_type(socket, "status_changed")
    assert frame["data"]["user_id"] == watched.pk
    assert frame["data"]["is_online"] is True

    await get_backend().remove_connection(str(watched.pk), "elsewhere")
    await get_runtime().beat()
    await get_runtime().beat()
    frame = await receive_type(socket, "status_changed")
    assert frame["data"]["is_online"] is False
    assert frame["data"]["last_seen"] is not None
    await socket.disconnect()


async def test_a_delivered_status_change_is_not_sent_twice(presence: dict[str, Any]) -> None:
    socket, watched = await subscribed_watcher(presence)
    connection = await user_online_service.aadd_user_connection(watched.pk)
    await get_runtime().beat()  # races the real message: must not pre-empt it
    online = await receive_type(socket, "status_changed")
    assert online["data"]["is_online"] is True

    await user_online_service.aremove_user_connection(watched.pk, connection, grace=0)
    await get_runtime().beat()
    offline = await receive_type(socket, "status_changed")
    assert offline["data"]["is_online"] is False
    await watched.arefresh_from_db()
    # The exact last_seen of the transition, not the time of a resync.
    assert offline["data"]["last_seen"] == watched.last_seen.isoformat()

    await get_runtime().beat()
    await get_runtime().beat()
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()
