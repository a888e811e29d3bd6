"""set_presence keeps the device given on the URL (``?device=``) when it omits the device."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from django_presence.services import user_online_service
from tests.asgi import application

from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5


async def test_an_activity_update_keeps_the_device_the_connection_opened_with() -> None:
    user = await get_user_model().objects.acreate(username="dr-device")
    socket = WebsocketCommunicator(
        application, f"/ws/user/?token={make_token(user.pk)}&device=web"
    )
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    try:
        await socket.send_json_to(
            {"type": "set_presence", "id": 1, "data": {"activity": "in_call"}}
        )
        reply = await socket.receive_json_from(timeout=TIMEOUT)
        assert reply["type"] == "ack", reply
        presence = (await user_online_service.aget_presence([user.pk]))[user.pk]
        assert presence.devices == ("web",)
        assert presence.activities == ("in_call",)
        [held] = presence.connections.values()
        assert held == {"device": "web", "activity": "in_call", "data": {}}

        # A field named null still clears it.
        await socket.send_json_to({"type": "set_presence", "id": 2, "data": {"device": None}})
        await socket.receive_json_from(timeout=TIMEOUT)
        presence = (await user_online_service.aget_presence([user.pk]))[user.pk]
        assert presence.devices == ()
        assert presence.activities == ("in_call",)
    finally:
        await socket.disconnect()
