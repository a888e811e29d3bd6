"""The mixin that tracks any Channels WebSocket consumer's user as online."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qs

from .. import metrics, protocol
from ..availability import AvailabilityError, connection_data
from ..backends import ConnectionData, PublicPresence
from ..conf import valid_setting
from ..exceptions import TooManyConnections
from ..ids import SERVER_ID, new_connection_id
from ..middleware import refusal_log_level
from ..runtime import get_runtime
from ..services.online import user_online_service
from .layer import bounded_cancellation

logger = logging.getLogger(__name__)


class UserOnlineStatusMixin:
    """Track the authenticated user of any Channels WebSocket consumer as online.

    Put it first among the bases::

        class ConsultationConsumer(UserOnlineStatusMixin, AsyncJsonWebsocketConsumer):
            ...

    The connection is registered when the consumer accepts it (before the accept frame is
    sent, so the user is online by the time the client sees the socket open), heartbeated
    while it is open, and removed when the consumer stops for any reason (a clean
    disconnect, an exception, a dropped socket). The consumer's own ``connect``, ``receive`` and
    ``disconnect`` run unchanged, and the mixin sends nothing to the socket, except the
    close frame when the user's token expires (code ``4001``). A connection that is
    rejected, or whose user is anonymous, is never registered.

    When the token came in the ``Sec-WebSocket-Protocol`` header (see
    :mod:`django_presence.middleware`), a plain ``accept()`` answers with the
    ``access_token`` subprotocol, as browsers require; the token is never echoed.

    The mixin needs an async consumer (``AsyncWebsocketConsumer``,
    ``AsyncJsonWebsocketConsumer``): on a sync ``WebsocketConsumer`` the class statement
    raises :class:`TypeError`, instead of every connection failing at run time.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from channels.consumer import SyncConsumer

        if issubclass(cls, SyncConsumer):
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} combines UserOnlineStatusMixin with a "
                "sync consumer; the mixin needs an async one. Subclass "
                "channels.generic.websocket.AsyncWebsocketConsumer (or "
                "AsyncJsonWebsocketConsumer) instead of WebsocketConsumer."
            )

    #: The id under which this connection is registered, once accepted.
    presence_connection_id: str | None = None
    presence_initial_data: ConnectionData | None = None
    presence_user_id: Any = None
    _presence_expiry: asyncio.TimerHandle | None = None
    _presence_close_task: asyncio.Future[None] | None = None

    scope: Any

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            # Runs however the consumer ends, including when a send to a closed socket
            # raised and the server never delivered websocket.disconnect.
            if self.presence_connection_id is not None or self._presence_expiry is not None:
                await asyncio.shield(self._presence_unregister())

    @property
    def channel_receive(self) -> Any:
        """The channel-layer receive, made to end within a tenth of a second once cancelled.

        See :func:`~django_presence.consumers.layer.bounded_cancellation`: without it a
        server shutting down can wait forever for a consumer on channels_redis.
        """
        return self._presence_channel_receive

    @channel_receive.setter
    def channel_receive(self, receive: Any) -> None:
        self._presence_channel_receive = bounded_cancellation(receive)

    async def websocket_disconnect(self, message: Any) -> None:
        """Run the consumer's own disconnect handling, then unregister.

        The ``finally`` around ``__call__`` alone is not enough: Channels then awaits the
        cancelled channel-layer receive, and with channels_redis 4.3 that await can hang
        under load, which would leave the connection heartbeated forever.
        """
        try:
            await super().websocket_disconnect(message)  # type: ignore[misc]
        finally:
            if self.presence_connection_id is not None or self._presence_expiry is not None:
                await asyncio.shield(self._presence_unregister())

    #: Whether a frame from the client counts as the user's activity (they are not
    #: away; see docs/presence-states.md). True for a consumer whose traffic is the
    #: user's doing (a video call's signalling); ``UserConsumer`` sets it False, its
    #: clients report activity themselves (``activity`` requests).
    presence_activity_on_receive: bool = True

    async def websocket_receive(self, message: Any) -> None:
        """Note the user's activity (at most one backend write per interval), then handle it.

        The note is a dict update; a write, when one is due, runs in a task of its own, so
        the consumer's handling of the frame waits for nothing.
        """
        if self.presence_activity_on_receive and self.presence_connection_id is not None:
            get_runtime().note_activity_soon(str(self.presence_user_id))
        await super().websocket_receive(message)  # type: ignore[misc]

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Register the connection, then accept the socket (see Channels).

        Registering first means the user is online by the time the client sees the socket
        open; if the accept fails, the ``finally`` around the consumer unregisters it.
        """
        if subprotocol is None and self.scope.get("presence_token_subprotocol"):
            subprotocol = protocol.TOKEN_SUBPROTOCOL
        refused = await self._presence_register()
        if headers is None:
            await super().accept(subprotocol)  # type: ignore[misc]
        else:
            await super().accept(subprotocol, headers)  # type: ignore[misc]
        if refused is not None:
            await self._presence_refuse(refused)

    async def _presence_refuse(self, error: TooManyConnections) -> None:
        """Close a connection over a limit with 4009, and stop the consumer.

        The close follows the accept, so that a browser sees the code (a close before the
        accept is an HTTP 403 to it). The consumer then ends as if the client had left:
        Channels' ``websocket_disconnect`` leaves ``groups`` and calls ``disconnect()``,
        and the ``StopConsumer`` it raises ends ``connect()`` where it called ``accept()``.
        """
        metrics.increment("connections_refused", reason=error.reason)
        logger.log(
            refusal_log_level(),
            "Refused a connection: %s",
            error,
            extra=self.get_presence_log_extra(),
        )
        code = protocol.CLOSE_TOO_MANY_CONNECTIONS
        await self.close(code=code)  # type: ignore[attr-defined]
        await self.websocket_disconnect({"type": "websocket.disconnect", "code": code})

    def get_presence_user_id(self) -> Any:
        """The primary key of the user to track, or None to not track this connection.

        Defaults to ``scope["user"].pk`` for an authenticated user. Override to track
        something else.
        """
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        return user.pk

    def get_presence_connection_data(self) -> ConnectionData | None:
        """The connection's data from the start: its device, from ``?device=`` on the URL.

        A device that is not valid (too long, not printable) is ignored: a tracked
        consumer never refuses a socket for it. Override to derive the device or an
        activity from something else (a video consumer may return
        ``connection_data(activity="in_call")``).
        """
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        device = (query.get(protocol.DEVICE_PARAM) or [""])[0]
        if not device:
            return None
        try:
            return connection_data(device=device)
        except AvailabilityError:
            return None

    async def _presence_register(self) -> TooManyConnections | None:
        """Register the connection; return why it is refused, if it is over a limit."""
        if self.presence_connection_id is not None:
            return None
        user_id = self.get_presence_user_id()
        if user_id is None:
            return None
        runtime = get_runtime()
        process_limit: int | None = valid_setting("MAX_CONNECTIONS_PER_PROCESS")
        if process_limit is not None and len(runtime.connections) >= process_limit:
            return TooManyConnections(
                f"this server process holds {process_limit} connections",
                reason="process",
                limit=process_limit,
            )
        # The channel name, when there is a channel layer, so that the backend's record
        # of the connection says where to reach it (see user_online_service.disconnect_user).
        connection_id = getattr(self, "channel_name", None) or new_connection_id()
        self.presence_user_id = user_id
        self.presence_connection_id = connection_id
        #: The connection's data as registered (its device from ``?device=``...).
        self.presence_initial_data = self.get_presence_connection_data()
        # Tracked first: if the backend is down now, the next heartbeat registers it.
        runtime.track_connection(str(user_id), connection_id, self)
        try:
            await user_online_service.aadd_user_connection(
                user_id,
                connection_id,
                limit=valid_setting("MAX_CONNECTIONS_PER_USER"),
                data=self.presence_initial_data,
            )
        except TooManyConnections as e:
            runtime.untrack_connection(connection_id)
            self.presence_connection_id = None
            return e
        except Exception:
            # The backend or the DB is down: the socket stays open, and the runtime
            # registers the connection again at its next beat.
            runtime.registration_failed()
            metrics.increment("connections_opened")
            metrics.increment("connection_errors", operation="register")
            logger.exception(
                "Could not register connection %s of user %s; the next heartbeat retries",
                connection_id,
                user_id,
                extra=self.get_presence_log_extra(),
            )
        else:
            metrics.increment("connections_opened")
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "Opened connection %s of user %s",
                    connection_id,
                    user_id,
                    extra=self.get_presence_log_extra(),
                )
        self._presence_schedule_expiry()
        return None

    def get_presence_log_extra(self) -> dict[str, Any]:
        """The ``extra`` of this connection's log records: user_id, connection_id, server.

        Log formatters that emit JSON (python-json-logger, structlog's stdlib bridge) turn
        them into fields.
        """
        return {
            "user_id": self.presence_user_id,
            "connection_id": self.presence_connection_id,
            "server": SERVER_ID,
        }

    def _presence_schedule_expiry(self) -> None:
        exp = self.scope.get("presence_token_exp")
        if exp is None:
            return
        loop = asyncio.get_running_loop()
        self._presence_expiry = loop.call_later(
            max(0.0, float(exp) - time.time()), self._presence_token_expired
        )

    def _presence_token_expired(self) -> None:
        logger.debug(
            "Token of user %s expired; closing its connection",
            self.presence_user_id,
            extra=self.get_presence_log_extra(),
        )
        self.presence_close_for_server(protocol.CLOSE_TOKEN_EXPIRED)

    async def presence_disconnect(self, message: dict[str, Any]) -> None:
        """Close the socket: sent by ``user_online_service.disconnect_user``."""
        code = int(message.get("code", protocol.CLOSE_DISCONNECTED))
        await self.close(code=code)  # type: ignore[attr-defined]

    def presence_watched_user_keys(self) -> Collection[str]:
        """The users whose status this connection forwards: none (``UserConsumer`` has some)."""
        return ()

    async def presence_resync(self, snapshot: Mapping[str, tuple[PublicPresence, int]]) -> None:
        """Catch up on watched users' transitions (called by the runtime): none here."""

    async def presence_rejoin_groups(self) -> None:
        """Join this connection's channel-layer groups again: none are joined here."""

    def presence_streams(self) -> Collection[str]:
        """The message streams this connection follows: none here (UserConsumer does)."""
        return ()

    async def presence_check_streams(self, positions: Mapping[str, Any]) -> None:
        """Catch up on followed streams: none are followed here."""

    def presence_close_for_server(self, code: int) -> None:
        """Close the socket with ``code`` on the server's initiative (from any task).

        Used when the token expires and by ``user_online_service.disconnect_user``.
        Override to tell the client why before closing.
        """
        # Kept on the consumer so the task is not garbage-collected before it runs.
        self._presence_close_task = asyncio.ensure_future(
            self.close(code=code)  # type: ignore[attr-defined]
        )

    async def _presence_unregister(self) -> None:
        if self._presence_expiry is not None:
            self._presence_expiry.cancel()
            self._presence_expiry = None
        connection_id = self.presence_connection_id
        if connection_id is None:
            return
        extra = self.get_presence_log_extra()
        self.presence_connection_id = None
        runtime = get_runtime()
        runtime.untrack_connection(connection_id)
        metrics.increment("connections_closed")
        try:
            await user_online_service.aremove_user_connection(self.presence_user_id, connection_id)
        except Exception:
            # The backend or the DB is down: the runtime's next beat retires what its
            # lease holds and files again what is still open, and a sweep then removes
            # this connection and announces the user offline.
            runtime.removal_failed()
            metrics.increment("connection_errors", operation="unregister")
            logger.exception(
                "Could not remove connection %s of user %s; a sweep removes it",
                connection_id,
                self.presence_user_id,
                extra=extra,
            )
        else:
            logger.debug(
                "Closed connection %s of user %s",
                connection_id,
                self.presence_user_id,
                extra=extra,
            )
