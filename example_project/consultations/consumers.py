"""The consultation room's WebRTC signalling consumer, at ``ws/consultation/<id>/``.

It relays ``offer``, ``answer`` and ``ice_candidate`` messages between the consultation's
doctor and patient, and to no one else: anybody else is rejected before the socket is
accepted. It inherits :class:`~django_presence.consumers.UserOnlineStatusMixin`, which
tracks the participant as online while the room is open and changes nothing else: the
body below behaves the same with or without the mixin (``tests/test_example_project.py``
runs the same exchange through both).

Wire format, JSON text frames ``{"type": ..., "data": {...}}``:

- client to server: ``offer`` / ``answer`` / ``ice_candidate`` with any JSON object as
  ``data`` (an SDP, a candidate); it reaches the other participant's open room sockets.
- server to client: the same three types, ``data`` with ``from_user_id`` added;
  ``room_joined`` ``{consultation_id, user_id, peer_id}`` on connect; ``peer_joined`` /
  ``peer_present`` / ``peer_left`` ``{user_id}`` about the other participant's room
  sockets; ``error`` ``{code, message}`` with ``code`` among ``invalid_json``,
  ``invalid_payload``, ``unknown_type`` and ``too_large``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from django_presence.consumers import UserOnlineStatusMixin

from .models import Consultation

logger = logging.getLogger(__name__)

#: The message types relayed between the two participants.
SIGNAL_TYPES = frozenset({"offer", "answer", "ice_candidate"})
#: Largest text frame accepted (an SDP with many candidates stays well below it).
MAX_FRAME_CHARS = 64 * 1024


@database_sync_to_async
def get_consultation_for(consultation_id: Any, user: Any) -> Consultation | None:
    """The consultation if ``user`` is one of its two participants, else None."""
    if user is None or not user.is_authenticated:
        return None
    try:
        consultation = Consultation.objects.get(pk=consultation_id)
    except (Consultation.DoesNotExist, ValueError):
        return None
    return consultation if consultation.is_participant(user) else None


def room_group(consultation_id: Any) -> str:
    """The channel-layer group of a consultation's room sockets."""
    return f"example.consultation.{int(consultation_id)}"


class ConsultationConsumer(UserOnlineStatusMixin, AsyncJsonWebsocketConsumer):
    """Relay WebRTC signalling between a consultation's doctor and patient.

    The body never calls ``super()`` without arguments, so that the test can build the
    same consumer without the mixin from this very class body.
    """

    consultation: Consultation | None = None
    group_name: str | None = None

    async def connect(self) -> None:
        """Accept the consultation's doctor and patient; reject anyone else."""
        consultation_id = self.scope["url_route"]["kwargs"]["consultation_id"]
        user = self.scope.get("user")
        self.consultation = await get_consultation_for(consultation_id, user)
        if self.consultation is None:
            logger.info(
                "Rejected user %s from consultation %s", getattr(user, "pk", None), consultation_id
            )
            await self.close()
            return
        self.group_name = room_group(self.consultation.pk)
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        await self.send_json(
            {
                "type": "room_joined",
                "data": {
                    "consultation_id": self.consultation.pk,
                    "user_id": user.pk,
                    "peer_id": self.consultation.other_participant_id(user),
                },
            }
        )
        await self._to_room("peer_joined")

    async def disconnect(self, code: int) -> None:
        """Tell the other participant, and leave the room's group."""
        if self.group_name is None:
            return
        await self._to_room("peer_left")
        await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Decode a text frame; answer malformed input with an error frame, never crash."""
        if text_data is None:
            await self._error("invalid_payload", "Send JSON text frames, not binary ones.")
            return
        if len(text_data) > MAX_FRAME_CHARS:
            await self._error("too_large", f"Frames are limited to {MAX_FRAME_CHARS} characters.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._error("invalid_json", "The frame is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Relay a signalling message to the other participant."""
        if not isinstance(content, dict) or not isinstance(content.get("data", {}), dict):
            await self._error("invalid_payload", 'Expected {"type": ..., "data": {...}}.')
            return
        kind = content.get("type")
        if kind not in SIGNAL_TYPES:
            await self._error(
                "unknown_type", f"Expected one of {sorted(SIGNAL_TYPES)}, got {kind!r}."
            )
            return
        await self.channel_layer.group_send(
            self.group_name,
            {
                "type": "consultation.signal",
                "kind": kind,
                "data": content.get("data", {}),
                "from_user_id": self.scope["user"].pk,
            },
        )

    async def consultation_signal(self, event: dict[str, Any]) -> None:
        """Deliver a signal from the other participant (never echo one's own)."""
        if event["from_user_id"] == self.scope["user"].pk:
            return
        await self.send_json(
            {
                "type": event["kind"],
                "data": {**event["data"], "from_user_id": event["from_user_id"]},
            }
        )

    async def consultation_peer(self, event: dict[str, Any]) -> None:
        """Tell this socket that the other participant joined or left the room."""
        if event["user_id"] == self.scope["user"].pk:
            return
        await self.send_json({"type": event["event"], "data": {"user_id": event["user_id"]}})
        if event["event"] == "peer_joined":
            # The newcomer cannot know who was already there: say so.
            await self._to_room("peer_present")

    async def _to_room(self, event: str) -> None:
        await self.channel_layer.group_send(
            self.group_name,
            {"type": "consultation.peer", "event": event, "user_id": self.scope["user"].pk},
        )

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "data": {"code": code, "message": message}})
