"""ConsultationConsumer relays signalling exactly as it would without the presence mixin."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from consultations.consumers import ConsultationConsumer
from django.urls import path
from users.demo import seed
from users.tokens import issue_access_token

from django_presence.middleware import JWTAuthMiddlewareStack
from django_presence.services import user_online_service

pytestmark = pytest.mark.django_db(transaction=True)


def without_mixin(consumer: type) -> type:
    """The same class body as ``consumer``, on AsyncJsonWebsocketConsumer alone."""
    body = {k: v for k, v in vars(consumer).items() if k not in ("__dict__", "__weakref__")}
    return type("PlainConsultationConsumer", (AsyncJsonWebsocketConsumer,), body)


PlainConsultationConsumer = without_mixin(ConsultationConsumer)


def application(consumer: type) -> Any:
    return JWTAuthMiddlewareStack(
        URLRouter([path("ws/consultation/<int:consultation_id>/", consumer.as_asgi())])
    )


def communicator(
    app: Any, consultation_id: int, user: Any, **kwargs: Any
) -> WebsocketCommunicator:
    token, _ = issue_access_token(user)
    return WebsocketCommunicator(
        app, f"/ws/consultation/{consultation_id}/?token={token}", **kwargs
    )


async def run_exchange(consumer: type) -> tuple[list[Any], list[bool]]:
    """Play one call between the demo's doctor and patient; return what each received.

    Also returns whether the doctor was online at each checkpoint.
    """
    demo = await database_sync_to_async(seed)()
    doctor, patient, admin = demo["doctor"], demo["patient"], demo["admin"]
    consultation_id = demo["consultation"].pk
    app = application(consumer)
    transcript: list[Any] = []
    online: list[bool] = []

    async def got(who: str, side: WebsocketCommunicator) -> dict[str, Any]:
        frame = await side.receive_json_from(timeout=5)
        transcript.append((who, frame))
        return frame

    doc = communicator(app, consultation_id, doctor)
    pat = communicator(app, consultation_id, patient)
    assert (await doc.connect())[0]
    await got("doctor", doc)
    online.append(await user_online_service.ais_user_online(doctor.pk))
    assert (await pat.connect())[0]
    await got("patient", pat)
    await got("doctor", doc)  # peer_joined
    await got("patient", pat)  # peer_present

    await doc.send_json_to({"type": "offer", "data": {"sdp": "v=0 offer"}})
    await got("patient", pat)
    await pat.send_json_to({"type": "answer", "data": {"sdp": "v=0 answer"}})
    await got("doctor", doc)
    await doc.send_json_to({"type": "ice_candidate", "data": {"candidate": {"candidate": "a"}}})
    await got("patient", pat)
    await pat.send_json_to({"type": "ice_candidate", "data": {"candidate": {"candidate": "b"}}})
    await got("doctor", doc)
    # A forged sender id is overwritten by the authenticated user's.
    await pat.send_json_to({"type": "answer", "data": {"sdp": "x", "from_user_id": admin.pk}})
    await got("doctor", doc)

    # Malformed input gets an error frame and the socket stays usable.
    await doc.send_json_to({"type": "hangup", "data": {}})
    await got("doctor", doc)
    await doc.send_to(text_data="{not json")
    await got("doctor", doc)
    await doc.send_json_to(["offer"])
    await got("doctor", doc)
    await doc.send_json_to({"type": "offer", "data": "not an object"})
    await got("doctor", doc)
    await doc.send_to(text_data='{"type": "offer", "data": {"sdp": "' + "x" * 70_000 + '"}}')
    await got("doctor", doc)

    # Anyone else is refused before the socket opens, and hears nothing.
    outsider = communicator(app, consultation_id, admin)
    connected, _ = await outsider.connect()
    assert not connected
    await outsider.disconnect()  # The browser's side of the refused handshake.
    assert await doc.receive_nothing(0.2)
    assert await pat.receive_nothing(0.2), "nothing is echoed to its sender"
    online.append(await user_online_service.ais_user_online(doctor.pk))

    await pat.disconnect()
    await got("doctor", doc)  # peer_left
    await doc.disconnect()
    online.append(await user_online_service.ais_user_online(doctor.pk))
    return transcript, online


EXPECTED = [
    (
        "doctor",
        {"type": "room_joined", "data": {"consultation_id": 1, "user_id": 1, "peer_id": 2}},
    ),
    (
        "patient",
        {"type": "room_joined", "data": {"consultation_id": 1, "user_id": 2, "peer_id": 1}},
    ),
    ("doctor", {"type": "peer_joined", "data": {"user_id": 2}}),
    ("patient", {"type": "peer_present", "data": {"user_id": 1}}),
    ("patient", {"type": "offer", "data": {"sdp": "v=0 offer", "from_user_id": 1}}),
    ("doctor", {"type": "answer", "data": {"sdp": "v=0 answer", "from_user_id": 2}}),
    (
        "patient",
        {"type": "ice_candidate", "data": {"candidate": {"candidate": "a"}, "from_user_id": 1}},
    ),
    (
        "doctor",
        {"type": "ice_candidate", "data": {"candidate": {"candidate": "b"}, "from_user_id": 2}},
    ),
    ("doctor", {"type": "answer", "data": {"sdp": "x", "from_user_id": 2}}),
    (
        "doctor",
        {
            "type": "error",
            "data": {
                "code": "unknown_type",
                "message": "Expected one of ['answer', 'ice_candidate', 'offer'], got 'hangup'.",
            },
        },
    ),
    (
        "doctor",
        {
            "type": "error",
            "data": {"code": "invalid_json", "message": "The frame is not valid JSON."},
        },
    ),
    (
        "doctor",
        {
            "type": "error",
            "data": {
                "code": "invalid_payload",
                "message": 'Expected {"type": ..., "data": {...}}.',
            },
        },
    ),
    (
        "doctor",
        {
            "type": "error",
            "data": {
                "code": "invalid_payload",
                "message": 'Expected {"type": ..., "data": {...}}.',
            },
        },
    ),
    (
        "doctor",
        {
            "type": "error",
            "data": {"code": "too_large", "message": "Frames are limited to 65536 characters."},
        },
    ),
    ("doctor", {"type": "peer_left", "data": {"user_id": 2}}),
]


async def test_the_same_exchange_with_and_without_the_mixin() -> None:
    with_mixin, online_with = await run_exchange(ConsultationConsumer)
    await database_sync_to_async(_reset_ids)()
    plain, online_plain = await run_exchange(PlainConsultationConsumer)
    assert with_mixin == EXPECTED
    assert plain == with_mixin
    # The only difference: the mixin tracked the doctor as online while connected.
    assert online_with == [True, True, False]
    assert online_plain == [False, False, False]


def _reset_ids() -> None:
    # The second run must see the same primary keys as the first (same transcript).
    from consultations.models import Consultation
    from django.contrib.auth import get_user_model
    from django.db import connection

    Consultation.objects.all().delete()
    get_user_model().objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM sqlite_sequence")


async def test_the_mixin_answers_a_token_sent_as_subprotocol() -> None:
    demo = await database_sync_to_async(seed)()
    token, _ = issue_access_token(demo["doctor"])
    side = WebsocketCommunicator(
        application(ConsultationConsumer),
        f"/ws/consultation/{demo['consultation'].pk}/",
        subprotocols=["access_token", token],
    )
    connected, subprotocol = await side.connect()
    assert connected
    # Browsers close a socket whose server picks none of the offered subprotocols.
    assert subprotocol == "access_token"
    await side.disconnect()


async def test_an_anonymous_or_unknown_consultation_is_refused() -> None:
    demo = await database_sync_to_async(seed)()
    app = application(ConsultationConsumer)
    anonymous = WebsocketCommunicator(app, f"/ws/consultation/{demo['consultation'].pk}/")
    assert not (await anonymous.connect())[0]
    await anonymous.disconnect()
    missing = communicator(app, 999, demo["doctor"])
    assert not (await missing.connect())[0]
    await missing.disconnect()
