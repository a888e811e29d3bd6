"""Closing a user's sockets on whatever server holds them.

A tracked consumer registers under its channel-layer channel name, so the backend's
record of each connection says where to reach it: ``disconnect_user`` reads the user's
connections and sends each one a ``presence.disconnect`` message, which the consumer
answers by closing its socket. This costs nothing per connection until it is used (no
group membership, no listener).

Channel-layer delivery is at-most-once: a lost message leaves that socket open, but
``disconnect_user`` also removes the user's presence at once, so the user is shown
offline whatever happens to the messages. Without a channel layer, only the sockets of
the calling process are closed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from channels.layers import get_channel_layer

from .backends import get_backend
from .conf import presence_settings

logger = logging.getLogger(__name__)

#: Close code of sockets closed by ``disconnect_user`` (logout, password change, admin).
CLOSE_DISCONNECTED = 4010

_controls: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Control] = (
    weakref.WeakKeyDictionary()
)


class Control:
    """The tracked consumers of one event loop, by connection id."""

    def __init__(self) -> None:
        self.consumers: dict[str, weakref.ReferenceType[Any]] = {}

    def register(self, connection_id: str, consumer: Any) -> None:
        """Remember ``consumer`` (weakly) under its connection id."""
        self.consumers[connection_id] = weakref.ref(consumer)

    def unregister(self, connection_id: str) -> None:
        """Forget a consumer (it is closing)."""
        self.consumers.pop(connection_id, None)

    def close_user(self, user_key: str, code: int = CLOSE_DISCONNECTED) -> int:
        """Close this event loop's sockets of ``user_key``; return how many."""
        closed = 0
        for consumer_ref in list(self.consumers.values()):
            consumer = consumer_ref()
            if consumer is not None and str(consumer.presence_user_id) == user_key:
                consumer.presence_close_for_server(code)
                closed += 1
        return closed


def get_control() -> Control:
    """The control registry of the running event loop."""
    loop = asyncio.get_running_loop()
    control = _controls.get(loop)
    if control is None:
        control = _controls[loop] = Control()
    return control


async def adisconnect_user(user_key: str, code: int = CLOSE_DISCONNECTED) -> None:
    """Close every socket of ``user_key`` on every server process."""
    layer = get_channel_layer(presence_settings.CHANNEL_LAYER)
    if layer is None:
        get_control().close_user(user_key, code)
        return
    for connection in await get_backend().user_connections(user_key):
        if connection.closing:
            continue
        try:
            await layer.send(
                connection.connection_id, {"type": "presence.disconnect", "code": code}
            )
        except Exception:
            # A connection registered by hand (not by the mixin) has no channel: skip it.
            logger.warning(
                "Could not ask connection %s of user %s to close",
                connection.connection_id,
                user_key,
                exc_info=True,
            )
