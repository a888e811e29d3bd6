"""The ready ``ws/user/`` consumer."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .mixins import UserOnlineStatusMixin


class UserConsumer(UserOnlineStatusMixin, AsyncJsonWebsocketConsumer):
    """The ready ``ws/user/`` consumer: presence, messaging, groups and subscriptions.

    The wire protocol is documented in ``docs/protocol.md``.
    """

    async def connect(self) -> None:
        """Accept authenticated users only."""
        if self.get_presence_user_id() is None:
            await self.close()
            return
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Answer ``ping`` with ``pong``."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "data": {}})
