"""One consumer per variant; all sit behind the same JWT middleware (one indexed SELECT).

The ``-cheap`` variants reuse the bare and package consumers behind
:class:`CheapAuthMiddleware` instead.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Any

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from django_presence.consumers import UserOnlineStatusMixin

from . import stats

SUBPROTOCOL = "access_token"


class BareConsumer(AsyncWebsocketConsumer):
    """The yardstick: accept an authenticated socket and do nothing else."""

    async def connect(self) -> None:
        """Accept, answering the token subprotocol as a browser requires."""
        await self.accept(SUBPROTOCOL)
        stats.connect_done()


class PackageConsumer(UserOnlineStatusMixin, AsyncWebsocketConsumer):
    """The bare consumer plus this package's presence mixin: the cost of presence alone."""

    async def connect(self) -> None:
        """Accept (the mixin registers the connection first and answers the subprotocol)."""
        await self.accept()
        stats.connect_done()


# -- django-channels-presence 1.0, used as its README shows ----------------------------------

PEER_ROOM = "bench-all"


class PeerConsumer(WebsocketConsumer):
    """django-channels-presence's documented consumer: one room holding every socket.

    Measured at its best: no ``presence_changed`` receiver broadcasts the member list.
    """

    def connect(self) -> None:
        """Accept, then add this socket to the room (DB rows, group_add)."""
        from channels_presence.models import Room

        self.accept(SUBPROTOCOL)
        Room.objects.add(PEER_ROOM, self.channel_name, self.scope["user"])
        stats.connect_done()

    def disconnect(self, code: int) -> None:
        """Remove this socket from the room."""
        from channels_presence.models import Room

        Room.objects.remove(PEER_ROOM, self.channel_name)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Heartbeats touch the socket's row, as the README's ``@touch_presence`` does."""
        from channels_presence.models import Presence

        Presence.objects.touch(self.channel_name)


# -- the original app's design: SADD, then SCARD, then a DB write ----------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _redis() -> Any:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=1000, timeout=30, socket_timeout=30
        )
        client = _clients[loop] = aioredis.Redis(connection_pool=pool)
    return client


def _write_is_online(user_id: Any, online: bool) -> None:
    fields: dict[str, Any] = {"is_online": online}
    if not online:
        fields["last_seen"] = timezone.now()
    get_user_model()._default_manager.filter(pk=user_id).update(**fields)


class OriginalDesignConsumer(AsyncWebsocketConsumer):
    """The original app's three separate steps, as its summary describes them.

    A Redis set of connection ids per user; the user is online when SCARD says 1 after a
    SADD, offline when it says 0 after a SREM. Racy by construction (see LESSONS.md).
    """

    async def connect(self) -> None:
        """Accept, then add the connection and maybe mark the user online."""
        user_id = self.scope["user"].pk
        self.presence_key = f"orig:u:{user_id}"
        self.presence_id = uuid.uuid4().hex
        await self.accept(SUBPROTOCOL)
        client = _redis()
        await client.sadd(self.presence_key, self.presence_id)
        if await client.scard(self.presence_key) == 1:
            await database_sync_to_async(_write_is_online)(user_id, True)
            stats.record("online", user_id)
        stats.connect_done()

    async def disconnect(self, code: int) -> None:
        """Remove the connection and maybe mark the user offline."""
        if not hasattr(self, "presence_key"):
            return
        client = _redis()
        await client.srem(self.presence_key, self.presence_id)
        if await client.scard(self.presence_key) == 0:
            user_id = self.scope["user"].pk
            await database_sync_to_async(_write_is_online)(user_id, False)
            stats.record("offline", user_id)


# -- cheap authentication (issue 17): the package's cost without a JWT decode to hide it ------


@database_sync_to_async
def _user_by_id(pk: int) -> Any:
    return get_user_model()._default_manager.filter(pk=pk).first()


class CheapAuthMiddleware:
    """The user whose id follows ``access_token`` in the subprotocols: one indexed SELECT.

    No signature, no expiry: for the benchmark only. Sets ``presence_token_subprotocol`` so
    that the mixin answers the subprotocol, as it does behind the JWT middleware.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        subprotocols = list(scope.get("subprotocols") or ())
        user = None
        if SUBPROTOCOL in subprotocols and subprotocols[-1] != SUBPROTOCOL:
            raw = subprotocols[subprotocols.index(SUBPROTOCOL) + 1]
            user = await _user_by_id(int(raw)) if raw.isdigit() else None
        if user is None:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 4003})
            return None
        scope = {**scope, "user": user, "presence_token_subprotocol": True}
        return await self.inner(scope, receive, send)


def auth_for(variant: str) -> Any:
    """The authentication middleware of ``variant``."""
    if variant.endswith("-cheap"):
        return CheapAuthMiddleware
    from django_presence.middleware import JWTAuthMiddlewareStack

    return JWTAuthMiddlewareStack


def consumer_for(variant: str) -> Any:
    """The consumer class of ``variant``."""
    if variant == "user":
        from django_presence.consumers import UserConsumer

        class BenchUserConsumer(UserConsumer):
            """The package's ready ``ws/user/`` consumer, marking when connect is done."""

            async def connect(self) -> None:
                await super().connect()
                stats.connect_done()

        return BenchUserConsumer
    return {
        "bare": BareConsumer,
        "package": PackageConsumer,
        "bare-cheap": BareConsumer,
        "package-cheap": PackageConsumer,
        "peer": PeerConsumer,
        "original": OriginalDesignConsumer,
    }[variant]
