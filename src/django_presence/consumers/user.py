"""The ready ``ws/user/`` consumer: presence, messaging, groups and subscriptions.

The wire protocol is documented in ``docs/protocol.md``, its vocabulary defined in
:mod:`django_presence.protocol`. In short, every frame is a JSON object ``{"type": ...,
"data": {...}}``; a request may carry an ``id`` that its reply echoes. Requests are
handled by ``request_<type>`` methods, so a subclass adds a request type by adding a
method; channel-layer events are handled by ``presence_<name>`` methods.

What the consumer keeps per connection lives beside it: the checks of what a client sends
in :mod:`.frames`, the watched users in :mod:`.subscriptions`, the group requests and
member views in :mod:`.groups`, the channel-layer groups (kept through a layer outage) in
:mod:`.layer`, and the message streams it replays and keeps in order in :mod:`.streams`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.utils import timezone

from .. import delivery, groups, metrics, protocol
from ..availability import presence_fields, seen_as
from ..backends import PublicPresence
from ..conf import number_setting, presence_settings
from ..ids import wire_user_id
from ..policies import ask, get_policy_class
from ..ratelimit import FloodDetector, TokenBucket, flood_setting, rate_setting, user_buckets
from ..services.messaging import send_group_message, user_messaging_service
from ..services.online import user_online_service
from ..transitions import syncs_user_model
from .availability import AvailabilityMixin
from .frames import (
    MAX_ID_LENGTH,
    REQUEST_TYPE,
    RequestError,
    frame_too_large,
    group_field,
    text_field,
    user_id_field,
    user_ids_field,
    valid_request_id,
)
from .groups import GroupsMixin
from .mixins import UserOnlineStatusMixin
from .streams import parse_since
from .subscriptions import Subscriptions

logger = logging.getLogger(__name__)


# GroupsMixin (a StreamsMixin and a LayerGroupsMixin) first: its presence_rejoin_groups()
# and stream hooks replace the presence mixin's no-ops.
class UserConsumer(
    AvailabilityMixin, GroupsMixin, UserOnlineStatusMixin, AsyncJsonWebsocketConsumer
):
    """The ready ``ws/user/`` consumer: presence, messaging, groups and subscriptions.

    Authenticated users only; the connection is tracked by
    :class:`~django_presence.consumers.UserOnlineStatusMixin`. Subclass it to change the
    authorization rules (:attr:`policy_class` or the ``can_*`` methods) or to add request
    types (``async def request_<type>(self, data)``), and route the subclass with
    :func:`django_presence.routing.presence_urlpatterns`.
    """

    #: The policy class; None uses ``DJANGO_PRESENCE["POLICY"]``.
    policy_class: type[Any] | None = None
    #: A ``ping`` is no sign of life of the user: clients send ``activity`` themselves.
    presence_activity_on_receive = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user: Any = None
        self.user_key = ""
        self.policy: Any = None
        self._member_id = uuid.uuid4().hex
        self.subscriptions = Subscriptions()
        # Watched user key -> whether this connection's user sees their details.
        self._details: dict[str, bool] = {}
        self._bucket: TokenBucket | None = None
        self._user_bucket: TokenBucket | None = None
        self._flood: FloodDetector | None = None
        self._max_frame = 0
        self._max_groups = 0
        self._max_watched = 0
        self._closing = False
        self._cleaned_up = False
        # Frames to send after the reply to the request being handled (replayed messages).
        self._after_reply: list[dict[str, Any]] = []

    @property  # a setting read per connection, not a constant
    def channel_layer_alias(self) -> str:  # type: ignore[override]
        """The channel layer named by ``DJANGO_PRESENCE["CHANNEL_LAYER"]``."""
        return str(presence_settings.CHANNEL_LAYER)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Runs however the consumer ends, even when the server never delivered
            # websocket.disconnect, so that no group membership outlives the socket.
            await self._cleanup()

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Refuse anonymous users; join the user's group and the broadcast group, then accept."""
        user_id = self.get_presence_user_id()
        if user_id is None:
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED)
            return
        self.user = self.scope["user"]
        self.user_key = str(user_id)
        # Settings are read before accepting, so a misconfiguration refuses the socket.
        self.policy = self.get_policy()
        limit = rate_setting("RATE_LIMIT_RATE", "RATE_LIMIT_BURST")
        self._bucket = TokenBucket(*limit) if limit else None
        limit = rate_setting("USER_RATE_LIMIT_RATE", "USER_RATE_LIMIT_BURST")
        self._user_bucket = user_buckets.acquire(self.user_key, *limit) if limit else None
        flood = flood_setting()
        self._flood = FloodDetector(*flood) if flood else None
        self._max_frame = int(number_setting("MAX_FRAME_SIZE", minimum=1))
        self._max_groups = int(number_setting("MAX_GROUPS"))
        self._max_watched = int(number_setting("MAX_WATCHED_USERS"))
        # Groups first: once the client sees the socket open, every message for the user
        # reaches it. Group messages that arrive meanwhile are handled after connect()
        # returns, so after the accept.
        await self.join_layer_group(groups.user_group(user_id))
        await self.join_layer_group(groups.broadcast_group())
        since = parse_since(self.scope.get("query_string", b""))
        requests = self._recovery_requests(since)
        # A stream the client names no position in starts where it is before the
        # accept: a message stored once the client sees the socket open lies beyond
        # that cursor, so it is sent (live, or read from the stream), never taken as
        # sent already, as a position read after the accept would make it.
        async with self._stream_lock:
            fresh = await self._follow([r for r in requests if r[1] is None])
        await self.accept()
        # Then replay what the client missed. Live messages that arrive meanwhile are
        # handled after connect() returns, and the cursors drop those replayed here.
        async with self._stream_lock:
            replayed = await self._follow([r for r in requests if r[1] is not None])
            info = {**fresh[0], **replayed[0]}
            await self.send_recovery(info, replayed[1])

    def _recovery_requests(
        self, since: dict[str, tuple[str, int]] | None
    ) -> list[tuple[str, tuple[str, int] | None]]:
        """The streams to follow from the handshake's positions; none if not asked for."""
        if since is None or not delivery.limits().size:
            return []  # the client did not ask: its cursors start at the first live message
        self.wants_recovery = True
        return [
            (delivery.user_stream(self.user_key), since.get(protocol.STREAM_USER)),
            (delivery.BROADCAST_STREAM, since.get(protocol.STREAM_BROADCAST)),
        ]

    async def _follow(
        self, requests: list[tuple[str, tuple[str, int] | None]]
    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """:meth:`follow_streams`, or nothing followed when the backend is down."""
        if not requests:
            return {}, []
        try:
            return await self.follow_streams(requests)
        except Exception:
            # The backend is down: live messages still flow, and the runtime's next beat
            # catches up (or says what was lost) once it is back.
            logger.warning(
                "Could not replay missed messages on connect",
                exc_info=True,
                extra=self.get_presence_log_extra(),
            )
            return {}, []

    async def disconnect(self, code: int) -> None:
        """Leave every group."""
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._cleaned_up:
            return
        self._cleaned_up = True
        self.cancel_presence_flush()
        for name in list(self._groups):
            await self._leave_group(name)
        await self.leave_layer_groups()
        self.subscriptions.clear()
        if self._user_bucket is not None:
            self._user_bucket = None
            user_buckets.release(self.user_key)

    # -- sending ---------------------------------------------------------------------------

    async def send_frame(self, type: str, data: dict[str, Any], request_id: Any = None) -> None:
        """Send ``{"type": type, "data": data}`` (and ``id``); never raises for a closed socket.

        A send to a socket that has just closed raises (``ClientDisconnected`` under
        uvicorn, another error under daphne); it is logged and ignored, so the consumer
        still cleans up.
        """
        frame: dict[str, Any] = {"type": type, "data": data}
        if request_id is not None:
            frame["id"] = request_id
        try:
            await self.send_json(frame)
        except Exception:
            # Each server raises its own error for a closed socket; none is ours to fix.
            logger.debug("Could not send a %s frame to a closed socket", type, exc_info=True)

    async def send_error(self, code: str, message: str, request_id: Any = None) -> None:
        """Send an ``error`` frame ``{code, message}``; counted in ``frames_rejected``."""
        metrics.increment("frames_rejected", reason=code)
        await self.send_frame(protocol.ERROR, {"code": code, "message": message}, request_id)

    # -- receiving -------------------------------------------------------------------------

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Check the frame's rate, type and size, parse it, and dispatch it.

        Nothing a client sends can raise out of here: unexpected errors are logged and
        answered with ``server_error``.
        """
        if self._closing:
            return
        try:
            await self._receive_frame(text_data, bytes_data)
        except Exception:
            # The error boundary of the whole frame: a bug must not end the consumer.
            logger.exception(
                "Unexpected error handling a frame from user %s",
                self.user_key,
                extra=self.get_presence_log_extra(),
            )
            await self.send_error(
                protocol.SERVER_ERROR, "The server could not handle this message."
            )

    async def _receive_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if not self._take_token():
            await self.send_error(protocol.RATE_LIMITED, "Too many messages; slow down.")
            if self._flood is not None and self._flood.record():
                await self._close_flooding()
            return
        if text_data is None:
            await self.send_error(
                protocol.INVALID_PAYLOAD, "Binary frames are not accepted; send JSON text."
            )
            return
        if frame_too_large(text_data, self._max_frame):
            await self.send_error(
                protocol.TOO_LARGE, f"Messages are limited to {self._max_frame} bytes."
            )
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.send_error(protocol.INVALID_JSON, "The message is not valid JSON.")
            return
        await self.dispatch_request(content)

    async def _close_flooding(self) -> None:
        metrics.increment("flood_closes")
        logger.warning(
            "Closing a flooding connection of user %s (code %d)",
            self.user_key,
            protocol.CLOSE_FLOODING,
            extra=self.get_presence_log_extra(),
        )
        self._closing = True
        try:
            await self.close(code=protocol.CLOSE_FLOODING)
        except Exception:
            # The socket is already gone: there is nothing left to close.
            logger.debug("Could not close a flooding connection", exc_info=True)

    def _take_token(self) -> bool:
        if self._bucket is not None and not self._bucket.take():
            return False
        if self._user_bucket is not None and not self._user_bucket.take():
            if self._bucket is not None:
                self._bucket.give_back()
            return False
        return True

    async def dispatch_request(self, content: Any) -> None:
        """Validate a parsed frame and run its ``request_<type>`` handler."""
        if not isinstance(content, dict):
            await self.send_error(protocol.INVALID_PAYLOAD, "A message must be a JSON object.")
            return
        request_id = content.get("id")
        if not valid_request_id(request_id):
            await self.send_error(
                protocol.INVALID_PAYLOAD,
                f"id must be an integer or a string of at most {MAX_ID_LENGTH} characters.",
            )
            return
        request_type = content.get("type")
        if not isinstance(request_type, str):
            await self.send_error(protocol.INVALID_PAYLOAD, "type must be a string.", request_id)
            return
        data = content.get("data", {})
        if not isinstance(data, dict):
            await self.send_error(
                protocol.INVALID_PAYLOAD, "data must be a JSON object.", request_id
            )
            return
        handler = (
            getattr(self, f"request_{request_type}", None)
            if REQUEST_TYPE.match(request_type)
            else None
        )
        if handler is None:
            await self.send_error(
                protocol.UNKNOWN_TYPE, f"Unknown message type {request_type[:40]!r}.", request_id
            )
            return
        try:
            reply = await handler(data)
        except RequestError as e:
            await self.send_error(e.code, e.message, request_id)
            return
        except Exception:
            # The error boundary of one request: logged, answered, the socket stays usable.
            logger.exception(
                "Unexpected error handling %s from user %s",
                request_type,
                self.user_key,
                extra={**self.get_presence_log_extra(), "request_type": request_type},
            )
            await self.send_error(
                protocol.SERVER_ERROR, "The server could not handle this message.", request_id
            )
            return
        if reply is not None:
            await self.send_frame(reply[0], reply[1], request_id)
        elif request_id is not None:
            await self.send_frame(protocol.ACK, {"request": request_type}, request_id)
        after, self._after_reply = self._after_reply, []
        for frame in after:
            await self.send_stored(frame)

    # -- authorization ---------------------------------------------------------------------

    def get_policy(self) -> Any:
        """A new instance of :attr:`policy_class` or of ``DJANGO_PRESENCE["POLICY"]``."""
        return (self.policy_class or get_policy_class())()

    async def _ask(self, method: str, *args: Any) -> bool:
        return await ask(self.policy, method, self.user, *args)

    async def can_message(self, target_id: Any) -> bool:
        """Whether this connection's user may send a direct message to ``target_id``."""
        return await self._ask("can_message", target_id)

    async def can_watch(self, target_id: Any) -> bool:
        """Whether this connection's user may subscribe to ``target_id``'s status."""
        return await self._ask("can_watch", target_id)

    async def can_join_group(self, group: str) -> bool:
        """Whether this connection's user may join client group ``group``."""
        return await self._ask("can_join_group", group)

    async def can_send_to_group(self, group: str) -> bool:
        """Whether this connection's user may send to ``group``, which it joined."""
        return await self._ask("can_send_to_group", group)

    async def can_broadcast(self) -> bool:
        """Whether this connection's user may broadcast to everyone."""
        return await self._ask("can_broadcast")

    async def can_see_details(self, target_id: Any) -> bool:
        """Whether this connection's user sees ``target_id``'s devices, activities, text."""
        return await self._ask("can_see_details", target_id)

    # -- payload helpers -------------------------------------------------------------------

    @staticmethod
    def parse_user_id(value: Any, name: str) -> Any:
        """A client's user id converted to the primary key's type, or RequestError."""
        return user_id_field(value, name)

    # -- requests --------------------------------------------------------------------------

    async def request_ping(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``ping`` -> ``pong``."""
        return protocol.PONG, {}

    async def request_direct_message(self, data: dict[str, Any]) -> None:
        """``direct_message {target_user_id, message}``: to every tab of the target.

        The sender is always this connection's user, whatever the client wrote.
        """
        target = self.parse_user_id(data.get("target_user_id"), "data.target_user_id")
        message = text_field(data, "message")
        if not await self.can_message(target):
            raise RequestError(protocol.FORBIDDEN, "You may not message this user.")
        if not await _user_exists(target):
            raise RequestError(protocol.NOT_FOUND, "No such user.")
        await user_messaging_service.send_message_to_user(self.user.pk, target, message)

    async def request_broadcast(self, data: dict[str, Any]) -> None:
        """``broadcast {message}``: a ``system_broadcast`` to everyone (staff by default)."""
        message = text_field(data, "message")
        if not await self.can_broadcast():
            raise RequestError(protocol.FORBIDDEN, "You may not broadcast.")
        await user_messaging_service.broadcast_system_message(message)

    async def request_group_message(self, data: dict[str, Any]) -> None:
        """``group_message {group, message}``: to every member; members only."""
        name = group_field(data)
        message = text_field(data, "message")
        if not self.is_group_member(name):
            raise RequestError(protocol.FORBIDDEN, "Join the group before sending to it.")
        if not await self.can_send_to_group(name):
            raise RequestError(protocol.FORBIDDEN, "You may not send to this group.")
        await send_group_message(name, message, from_user_id=self.user.pk)

    async def request_subscribe_presence(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``subscribe_presence {user_ids}`` -> ``presence_state {users}``, then diffs.

        The connection joins the watchers' groups first and reads the snapshot second,
        so no transition falls between the two; a ``status_changed`` older than the
        snapshot (its ``seq`` is not newer) is dropped, so none is delivered twice or
        out of order.
        """
        targets = user_ids_field(data, self._max_watched)
        limit = self._max_watched
        new = [pk for pk in targets if str(pk) not in self.subscriptions]
        if len(self.subscriptions) + len(new) > limit:
            raise RequestError(
                protocol.FORBIDDEN, f"A connection may watch at most {limit} users."
            )
        denied = [pk for pk in targets if not await self.can_watch(pk)]
        if denied:
            raise RequestError(
                protocol.FORBIDDEN,
                f"You may not watch users {[wire_user_id(pk) for pk in denied][:20]!r}.",
            )
        for pk in new:
            # Marked as watched before joining, so a failure half-way still cleans up.
            self.subscriptions.watch(str(pk))
            await self.join_layer_group(groups.watchers_group(pk))
        for pk in new:
            self._details[str(pk)] = await self.can_see_details(pk)
        states = await user_online_service.aget_presence_state(targets)
        users, views = {}, {}
        for pk in targets:
            key = str(pk)
            state = states[key]
            details = self._details.get(key, False)
            self.subscriptions.snapshot(key, seen_as(state.presence, details=details), state.seq)
            users[str(wire_user_id(pk))] = state.is_online
            views[str(wire_user_id(pk))] = presence_fields(state.presence, details=details)
        reply: dict[str, Any] = {"users": users, "states": views}
        if syncs_user_model():
            reply["last_seen"] = {
                str(wire_user_id(pk)): states[str(pk)].last_seen for pk in targets
            }
        return protocol.PRESENCE_STATE, reply

    async def request_unsubscribe_presence(self, data: dict[str, Any]) -> None:
        """``unsubscribe_presence {user_ids}``: no more ``status_changed`` for them."""
        for pk in user_ids_field(data, self._max_watched):
            self._details.pop(str(pk), None)
            if self.subscriptions.forget(str(pk)):
                await self.leave_layer_group(groups.watchers_group(pk))

    # -- the runtime's hooks ---------------------------------------------------------------

    def presence_watched_user_keys(self) -> Collection[str]:
        """The keys of the users this connection watches (read by the runtime's resync)."""
        return self.subscriptions

    async def presence_resync(self, snapshot: Mapping[str, tuple[PublicPresence, int]]) -> None:
        """Send a ``status_changed`` the channel layer lost (called by the runtime).

        The resent frame's ``last_seen`` is the time of the resync.
        """
        views = {
            key: (seen_as(presence, details=self._details.get(key, False)), seq)
            for key, (presence, seq) in snapshot.items()
        }
        for key, presence, seq in list(self.subscriptions.resync(views)):
            pk = get_user_model()._meta.pk.to_python(key)
            await self._send_status(pk, presence, seq, timezone.now().isoformat())

    # -- channel-layer events --------------------------------------------------------------

    async def _deliver_event(self, event: dict[str, Any]) -> None:
        frame = delivery.frame_of_event(event)
        if frame is not None:
            await self.deliver(event, *frame)

    async def presence_notification(self, event: dict[str, Any]) -> None:
        """A notification for this user -> ``notification {title, message, ...extra}``."""
        await self._deliver_event(event)

    async def presence_direct_message(self, event: dict[str, Any]) -> None:
        """A direct message to this user -> ``direct_message {from_user_id, message, sent_at}``."""
        await self._deliver_event(event)

    async def presence_broadcast(self, event: dict[str, Any]) -> None:
        """A system broadcast -> ``system_broadcast {message, ...extra}``."""
        await self._deliver_event(event)

    async def presence_group_message(self, event: dict[str, Any]) -> None:
        """A message to a joined group -> ``group_message {group, from_user_id, message}``."""
        if event["group"] in self._groups:
            await self._deliver_event(event)

    async def presence_status(self, event: dict[str, Any]) -> None:
        """A watched user's presence changed -> ``status_changed``, unless already told.

        Dropped when the snapshot or an earlier frame had it (``seq``), and when what
        this watcher may see of it did not change (say, an activity it may not see).
        """
        key = str(event["user_id"])
        seq = int(event.get("seq") or 0)
        presence = PublicPresence(
            event.get("state") or ("online" if event["is_online"] else "offline"),
            tuple(event.get("devices") or ()),
            tuple(event.get("activities") or ()),
            event.get("status_text") or "",
        )
        seen = seen_as(presence, details=self._details.get(key, False))
        if not self.subscriptions.update(key, seen, seq):
            return
        await self._send_status(event["user_id"], seen, seq, event["last_seen"])

    async def _send_status(
        self, user_id: Any, seen: PublicPresence, seq: int, last_seen: str | None
    ) -> None:
        details = self._details.get(str(user_id), False)
        await self.send_frame(
            protocol.STATUS_CHANGED,
            {
                "user_id": wire_user_id(user_id),
                "is_online": seen.online,
                "last_seen": None if seen.online else last_seen,
                "seq": seq,
                **presence_fields(seen, details=details),
            },
        )


@database_sync_to_async
def _user_exists(pk: Any) -> bool:
    return bool(get_user_model()._default_manager.filter(pk=pk).exists())
