"""The ready ``ws/user/`` consumer: presence, messaging, groups and subscriptions.

The wire protocol is documented in ``docs/protocol.md``. In short, every frame is a JSON
object ``{"type": ..., "data": {...}}``; a request may carry an ``id`` that its reply
echoes. Requests are handled by ``request_<type>`` methods, so a subclass adds a request
type by adding a method; channel-layer events are handled by ``presence_<name>`` methods.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone

from .. import groups, metrics, rooms
from ..backends import get_backend
from ..conf import number_setting, presence_settings
from ..policies import get_policy_class
from ..ratelimit import (
    FloodDetector,
    TokenBucket,
    flood_setting,
    rate_setting,
    user_buckets,
)
from ..services.messaging import send_group_message, user_messaging_service, wire_user_id
from ..services.online import SERVER_ID, _user_model_has_presence_fields
from .mixins import UserOnlineStatusMixin

logger = logging.getLogger(__name__)

#: Close code of a connection without an authenticated user (before accept: HTTP 403).
CLOSE_UNAUTHENTICATED = 4003
#: Close code of a connection that kept sending after being rate limited.
CLOSE_FLOODING = 4008

#: Error codes of ``error`` frames (``docs/protocol.md`` explains each).
INVALID_JSON = "invalid_json"
INVALID_PAYLOAD = "invalid_payload"
UNKNOWN_TYPE = "unknown_type"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
NOT_FOUND = "not_found"
SERVER_ERROR = "server_error"

_REQUEST_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_ID_LENGTH = 64
# Integer primary keys beyond a signed 64-bit column cannot exist; refusing them early
# keeps an overflow from reaching the database.
_MAX_INT_ID = 2**63


class RequestError(Exception):
    """Raised by a request handler to answer with an ``error`` frame of ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _RoomView:
    """What this connection has told its client about one group's members."""

    full: bool  # members mode (False: count-only mode)
    floor: int  # version of the last snapshot; older events are in it
    latest: int  # newest version seen
    count: int
    user_versions: dict[str, int] = field(default_factory=dict)


def _frame_too_large(text: str, limit: int) -> bool:
    # A str of n characters is n to 4n bytes in UTF-8: encode only when in doubt.
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


class UserConsumer(UserOnlineStatusMixin, AsyncJsonWebsocketConsumer):
    """The ready ``ws/user/`` consumer: presence, messaging, groups and subscriptions.

    Authenticated users only; the connection is tracked by
    :class:`~django_presence.consumers.UserOnlineStatusMixin`. Subclass it to change the
    authorization rules (:attr:`policy_class` or the ``can_*`` methods) or to add request
    types (``async def request_<type>(self, data)``), and route the subclass with
    :func:`django_presence.routing.presence_urlpatterns`.
    """

    #: The policy class; None uses ``DJANGO_PRESENCE["POLICY"]``.
    policy_class: type[Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user: Any = None
        self.user_key = ""
        self.policy: Any = None
        self._member_id = uuid.uuid4().hex
        self._layer_groups: set[str] = set()
        self._watching: dict[str, int] = {}  # watched user key -> seq of the last status sent
        self._watched_online: dict[str, bool] = {}  # watched user key -> last status sent
        self._resync_pending: dict[str, int] = {}  # watched user key -> seq seen by one beat
        self._rooms: dict[str, _RoomView] = {}
        self._bucket: TokenBucket | None = None
        self._user_bucket: TokenBucket | None = None
        self._flood: FloodDetector | None = None
        self._max_frame = 0
        self._max_groups = 0
        self._max_watched = 0
        self._closing = False
        self._cleaned_up = False
        self._rejoin_task: asyncio.Task[bool] | None = None

    @property
    def channel_receive(self) -> Any:
        """The channel-layer receive of this consumer, made to survive a layer outage."""
        return self._channel_receive

    @channel_receive.setter
    def channel_receive(self, receive: Any) -> None:
        # Channels' AsyncConsumer.__call__ sets this to the layer's receive. While Redis
        # is down that raises, which would end the consumer and close the socket: retry.
        async def resilient() -> Any:
            delay = 0.1
            while True:
                try:
                    return await receive()
                except Exception as e:
                    metrics.increment("channel_layer_failures")
                    # One WARNING per outage and process, however many sockets it holds;
                    # every retry is DEBUG, and the recovery INFO (see _LayerOutage).
                    first = self._layer_outage_began()
                    logger.log(
                        logging.WARNING if first else logging.DEBUG,
                        "Channel layer unavailable (%s); retrying in %.1f s",
                        e,
                        delay,
                        extra=self.get_presence_log_extra(),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

        self._channel_receive = resilient

    async def presence_resync(self, snapshot: dict[str, tuple[bool, int]]) -> None:
        """Send a ``status_changed`` the channel layer lost (called by the heartbeat).

        A transition newer than the last one sent is resent only when two beats in a row
        saw it: at the first, its own message (which carries the exact ``last_seen``) may
        still be on its way. The resent frame's ``last_seen`` is the time of the resync.
        """
        for key, last in list(self._watching.items()):
            online, seq = snapshot.get(key, (False, 0))
            if seq <= last:
                self._resync_pending.pop(key, None)
                continue
            if self._resync_pending.get(key) != seq:
                self._resync_pending[key] = seq
                continue
            del self._resync_pending[key]
            self._watching[key] = seq
            if self._watched_online.get(key) == online:
                continue
            self._watched_online[key] = online
            pk = get_user_model()._meta.pk.to_python(key)
            last_seen = None if online else timezone.now().isoformat()
            await self.send_frame(
                "status_changed",
                {
                    "user_id": wire_user_id(pk),
                    "is_online": online,
                    "last_seen": last_seen,
                    "seq": seq,
                },
            )

    async def presence_rejoin_groups(self) -> None:
        """Join this connection's channel-layer groups again (Redis lost its data)."""
        for group in list(self._layer_groups):
            await self.channel_layer.group_add(group, self.channel_name)

    def _layer_outage_began(self) -> bool:
        """Note that this connection's layer receive failed; True if the process's first."""
        if self._rejoin_task is not None or self._cleaned_up:
            return False
        task = asyncio.get_running_loop().create_task(self._rejoin_when_back())
        self._rejoin_task = task
        # A callback, not a finally in the task: it runs even if the task is cancelled
        # before it started, so the process's count of failing connections never leaks.
        task.add_done_callback(self._rejoin_done)
        return _layer_outage.begin()

    def _rejoin_done(self, task: asyncio.Task[bool]) -> None:
        self._rejoin_task = None
        _layer_outage.end(
            recovered=not task.cancelled() and task.exception() is None and task.result()
        )

    async def _rejoin_when_back(self) -> bool:
        """Join this connection's groups again, with backoff, once the layer answers.

        The layer's Redis may have restarted empty, and with it the connection's group
        memberships (its user's group, watched users, rooms); joining again is harmless
        when they were kept. A layer that shares the presence backend's Redis is also
        rejoined by the heartbeat; a layer on a Redis of its own, only here. The first
        ``group_add`` that succeeds ends the outage for this connection: returns True.
        """
        delay = 0.2
        while not self._cleaned_up:
            await asyncio.sleep(delay)
            try:
                await self.presence_rejoin_groups()
            except Exception as e:
                logger.debug(
                    "Channel layer still unavailable (%s)",
                    e,
                    extra=self.get_presence_log_extra(),
                )
                delay = min(delay * 2, 5.0)
                continue
            return True
        return False

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
            await self.close(code=CLOSE_UNAUTHENTICATED)
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
        await self._group_add(groups.user_group(user_id))
        await self._group_add(groups.broadcast_group())
        await self.accept()

    async def disconnect(self, code: int) -> None:
        """Leave every group."""
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._cleaned_up:
            return
        self._cleaned_up = True
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
        for name in list(self._rooms):
            await self._leave_room(name)
        if self.channel_layer is not None:
            for group in self._layer_groups:
                try:
                    await self.channel_layer.group_discard(group, self.channel_name)
                except Exception as e:
                    # The memberships left expire after the layer's group_expiry. During
                    # an outage (already logged once per process) this is DEBUG, so that
                    # sockets closing then do not log one error per group each.
                    outage = _layer_outage.failing > 0
                    logger.log(
                        logging.DEBUG if outage else logging.WARNING,
                        "Could not leave %d channel-layer groups (%s); they expire after "
                        "the layer's group_expiry",
                        len(self._layer_groups),
                        e,
                        exc_info=not outage,
                        extra=self.get_presence_log_extra(),
                    )
                    break  # the layer is unreachable: do not try every other group
        self._layer_groups.clear()
        self._watching.clear()
        if self._user_bucket is not None:
            self._user_bucket = None
            user_buckets.release(self.user_key)

    async def _group_add(self, group: str) -> None:
        if self.channel_layer is None:
            raise RuntimeError(
                "The ws/user/ consumer needs a channel layer: configure CHANNEL_LAYERS and "
                "DJANGO_PRESENCE['CHANNEL_LAYER']."
            )
        self._layer_groups.add(group)
        await self.channel_layer.group_add(group, self.channel_name)

    async def _group_discard(self, group: str) -> None:
        self._layer_groups.discard(group)
        if self.channel_layer is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    # -- sending ---------------------------------------------------------------------------

    async def send_frame(self, type: str, data: dict[str, Any], request_id: Any = None) -> None:
        """Send ``{"type": type, "data": data}`` (and ``id``); never raises for a closed socket.

        A send to a socket that has just closed raises (``ClientDisconnected`` under
        uvicorn); it is logged and ignored, so the consumer still cleans up.
        """
        frame: dict[str, Any] = {"type": type, "data": data}
        if request_id is not None:
            frame["id"] = request_id
        try:
            await self.send_json(frame)
        except Exception:
            logger.debug("Could not send a %s frame to a closed socket", type, exc_info=True)

    async def send_error(self, code: str, message: str, request_id: Any = None) -> None:
        """Send an ``error`` frame ``{code, message}``; counted in ``frames_rejected``."""
        metrics.increment("frames_rejected", reason=code)
        await self.send_frame("error", {"code": code, "message": message}, request_id)

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
            logger.exception(
                "Unexpected error handling a frame from user %s",
                self.user_key,
                extra=self.get_presence_log_extra(),
            )
            await self.send_error(SERVER_ERROR, "The server could not handle this message.")

    async def _receive_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if not self._take_token():
            await self.send_error(RATE_LIMITED, "Too many messages; slow down.")
            if self._flood is not None and self._flood.record():
                metrics.increment("flood_closes")
                logger.warning(
                    "Closing a flooding connection of user %s (code %d)",
                    self.user_key,
                    CLOSE_FLOODING,
                    extra=self.get_presence_log_extra(),
                )
                self._closing = True
                try:
                    await self.close(code=CLOSE_FLOODING)
                except Exception:
                    logger.debug("Could not close a flooding connection", exc_info=True)
            return
        if text_data is None:
            await self.send_error(
                INVALID_PAYLOAD, "Binary frames are not accepted; send JSON text."
            )
            return
        if _frame_too_large(text_data, self._max_frame):
            await self.send_error(TOO_LARGE, f"Messages are limited to {self._max_frame} bytes.")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.send_error(INVALID_JSON, "The message is not valid JSON.")
            return
        await self.dispatch_request(content)

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
            await self.send_error(INVALID_PAYLOAD, "A message must be a JSON object.")
            return
        request_id = content.get("id")
        if request_id is not None and not (
            (isinstance(request_id, str) and len(request_id) <= _MAX_ID_LENGTH)
            or (isinstance(request_id, int) and not isinstance(request_id, bool))
        ):
            await self.send_error(
                INVALID_PAYLOAD,
                f"id must be an integer or a string of at most {_MAX_ID_LENGTH} characters.",
            )
            return
        request_type = content.get("type")
        if not isinstance(request_type, str):
            await self.send_error(INVALID_PAYLOAD, "type must be a string.", request_id)
            return
        data = content.get("data", {})
        if not isinstance(data, dict):
            await self.send_error(INVALID_PAYLOAD, "data must be a JSON object.", request_id)
            return
        handler = (
            getattr(self, f"request_{request_type}", None)
            if _REQUEST_TYPE.match(request_type)
            else None
        )
        if handler is None:
            await self.send_error(
                UNKNOWN_TYPE, f"Unknown message type {request_type[:40]!r}.", request_id
            )
            return
        try:
            reply = await handler(data)
        except RequestError as e:
            await self.send_error(e.code, e.message, request_id)
            return
        except Exception:
            logger.exception(
                "Unexpected error handling %s from user %s",
                request_type,
                self.user_key,
                extra={**self.get_presence_log_extra(), "request_type": request_type},
            )
            await self.send_error(
                SERVER_ERROR, "The server could not handle this message.", request_id
            )
            return
        if reply is not None:
            await self.send_frame(reply[0], reply[1], request_id)
        elif request_id is not None:
            await self.send_frame("ack", {"request": request_type}, request_id)

    # -- authorization ---------------------------------------------------------------------

    def get_policy(self) -> Any:
        """A new instance of :attr:`policy_class` or of ``DJANGO_PRESENCE["POLICY"]``."""
        return (self.policy_class or get_policy_class())()

    async def _ask(self, method: str, *args: Any) -> bool:
        result = getattr(self.policy, method)(self.user, *args)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

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

    # -- payload helpers -------------------------------------------------------------------

    @staticmethod
    def parse_user_id(value: Any, name: str) -> Any:
        """A client's user id converted to the primary key's type, or RequestError."""
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, str))
            or (isinstance(value, int) and abs(value) >= _MAX_INT_ID)
            or (isinstance(value, str) and not 0 < len(value) <= 255)
        ):
            raise RequestError(INVALID_PAYLOAD, f"{name} must be a user id, got {value!r:.60}.")
        try:
            pk = get_user_model()._meta.pk.to_python(value)
        except ValidationError:
            raise RequestError(
                INVALID_PAYLOAD, f"{name} must be a user id, got {value!r:.60}."
            ) from None
        if pk is None:
            raise RequestError(INVALID_PAYLOAD, f"{name} must be a user id, got {value!r:.60}.")
        return pk

    @staticmethod
    def _text(data: dict[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise RequestError(INVALID_PAYLOAD, f"data.{name} must be a non-empty string.")
        return value

    @staticmethod
    def _group_name(data: dict[str, Any]) -> str:
        try:
            return groups.validate_client_group_name(data.get("group"))
        except ValueError as e:
            raise RequestError(INVALID_PAYLOAD, str(e)[:200]) from None

    def _user_ids(self, data: dict[str, Any]) -> list[Any]:
        values = data.get("user_ids")
        limit = self._max_watched
        if not isinstance(values, list) or not values:
            raise RequestError(
                INVALID_PAYLOAD, "data.user_ids must be a non-empty list of user ids."
            )
        if len(values) > limit:
            raise RequestError(INVALID_PAYLOAD, f"data.user_ids holds at most {limit} ids.")
        return list(dict.fromkeys(self.parse_user_id(v, "data.user_ids[]") for v in values))

    # -- requests --------------------------------------------------------------------------

    async def request_ping(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``ping`` -> ``pong``."""
        return "pong", {}

    async def request_direct_message(self, data: dict[str, Any]) -> None:
        """``direct_message {target_user_id, message}``: to every tab of the target.

        The sender is always this connection's user, whatever the client wrote.
        """
        target = self.parse_user_id(data.get("target_user_id"), "data.target_user_id")
        message = self._text(data, "message")
        if not await self.can_message(target):
            raise RequestError(FORBIDDEN, "You may not message this user.")
        if not await _user_exists(target):
            raise RequestError(NOT_FOUND, "No such user.")
        await user_messaging_service.send_message_to_user(self.user.pk, target, message)

    async def request_broadcast(self, data: dict[str, Any]) -> None:
        """``broadcast {message}``: a ``system_broadcast`` to everyone (staff by default)."""
        message = self._text(data, "message")
        if not await self.can_broadcast():
            raise RequestError(FORBIDDEN, "You may not broadcast.")
        await user_messaging_service.broadcast_system_message(message)

    async def request_join_group(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``join_group {group}`` -> ``group_joined {group, count, members_online?}``."""
        name = self._group_name(data)
        if name not in self._rooms:
            if len(self._rooms) >= self._max_groups:
                raise RequestError(
                    FORBIDDEN,
                    f"A connection may join at most {self._max_groups} groups.",
                )
            if not await self.can_join_group(name):
                raise RequestError(FORBIDDEN, "You may not join this group.")
            await self._group_add(groups.client_group(name))
            rooms.get_tracker().track(name, self.user_key, self._member_id)
            # A placeholder view until the snapshot below, so a failure still leaves.
            self._rooms[name] = _RoomView(True, 0, 0, 0)
            change = await get_backend().room_join(
                name,
                self.user_key,
                self._member_id,
                ttl=number_setting("CONNECTION_TTL", allow_zero=False),
            )
            await rooms.announce(change, origin=self.channel_name)
        return "group_joined", await self._room_snapshot(name)

    async def _room_snapshot(self, name: str) -> dict[str, Any]:
        members, version = await get_backend().room_members(name)
        full = len(members) <= rooms.member_limit()
        self._rooms[name] = _RoomView(full, version, version, len(members))
        data: dict[str, Any] = {"group": name, "count": len(members)}
        if full:
            data["members_online"] = [wire_user_id(m) for m in members]
        else:
            data["count_only"] = True
        return data

    async def request_leave_group(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``leave_group {group}`` -> ``group_left {group}`` (also if not a member)."""
        name = self._group_name(data)
        if name in self._rooms:
            await self._leave_room(name)
        return "group_left", {"group": name}

    async def _leave_room(self, name: str) -> None:
        self._rooms.pop(name, None)
        rooms.get_tracker().untrack(name, self._member_id)
        try:
            await self._group_discard(groups.client_group(name))
            change = await get_backend().room_leave(name, self.user_key, self._member_id)
            await rooms.announce(change, origin=self.channel_name)
        except Exception:
            # The membership's lease expires by itself and a sweep announces the leave.
            logger.exception(
                "Could not leave group %r cleanly", name, extra=self.get_presence_log_extra()
            )

    def is_group_member(self, name: str) -> bool:
        """Whether this connection joined client group ``name``."""
        return name in self._rooms

    async def request_group_message(self, data: dict[str, Any]) -> None:
        """``group_message {group, message}``: to every member; members only."""
        name = self._group_name(data)
        message = self._text(data, "message")
        if not self.is_group_member(name):
            raise RequestError(FORBIDDEN, "Join the group before sending to it.")
        if not await self.can_send_to_group(name):
            raise RequestError(FORBIDDEN, "You may not send to this group.")
        await send_group_message(name, message, from_user_id=self.user.pk)

    async def request_subscribe_presence(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``subscribe_presence {user_ids}`` -> ``presence_state {users}``, then diffs.

        The connection joins the watchers' groups first and reads the snapshot second,
        so no transition falls between the two; a ``status_changed`` older than the
        snapshot (its ``seq`` is not newer) is dropped, so none is delivered twice or
        out of order.
        """
        targets = self._user_ids(data)
        limit = self._max_watched
        new = [pk for pk in targets if str(pk) not in self._watching]
        if len(self._watching) + len(new) > limit:
            raise RequestError(FORBIDDEN, f"A connection may watch at most {limit} users.")
        denied = [pk for pk in targets if not await self.can_watch(pk)]
        if denied:
            raise RequestError(
                FORBIDDEN, f"You may not watch users {[wire_user_id(pk) for pk in denied][:20]!r}."
            )
        for pk in new:
            # Marked as watched before joining, so a failure half-way still cleans up.
            self._watching[str(pk)] = 0
            await self._group_add(groups.watchers_group(pk))
        snapshot = await get_backend().presence_snapshot([str(pk) for pk in targets])
        users = {}
        offline = []
        for pk in targets:
            online, seq = snapshot.get(str(pk), (False, 0))
            self._watching[str(pk)] = max(self._watching.get(str(pk), 0), seq)
            self._watched_online[str(pk)] = online
            users[str(wire_user_id(pk))] = online
            if not online:
                offline.append(pk)
        reply: dict[str, Any] = {"users": users}
        if presence_settings.SYNC_USER_MODEL and _user_model_has_presence_fields():
            seen = await _last_seen_of(offline) if offline else {}
            reply["last_seen"] = {str(wire_user_id(pk)): seen.get(str(pk)) for pk in targets}
        return "presence_state", reply

    async def request_unsubscribe_presence(self, data: dict[str, Any]) -> None:
        """``unsubscribe_presence {user_ids}``: no more ``status_changed`` for them."""
        for pk in self._user_ids(data):
            if self._watching.pop(str(pk), None) is not None:
                await self._group_discard(groups.watchers_group(pk))

    # -- channel-layer events --------------------------------------------------------------

    async def presence_notification(self, event: dict[str, Any]) -> None:
        """A notification for this user -> ``notification {title, message, ...extra}``."""
        data = {**event.get("extra", {}), "title": event["title"], "message": event["message"]}
        await self.send_frame("notification", data)

    async def presence_direct_message(self, event: dict[str, Any]) -> None:
        """A direct message to this user -> ``direct_message {from_user_id, message, sent_at}``."""
        await self.send_frame(
            "direct_message",
            {
                "from_user_id": event["from_user_id"],
                "message": event["message"],
                "sent_at": event["sent_at"],
            },
        )

    async def presence_broadcast(self, event: dict[str, Any]) -> None:
        """A system broadcast -> ``system_broadcast {message, ...extra}``."""
        await self.send_frame(
            "system_broadcast", {**event.get("extra", {}), "message": event["message"]}
        )

    async def presence_group_message(self, event: dict[str, Any]) -> None:
        """A message to a joined group -> ``group_message {group, from_user_id, message}``."""
        if event["group"] not in self._rooms:
            return
        data = {
            **event.get("extra", {}),
            "group": event["group"],
            "from_user_id": event["from_user_id"],
            "message": event["message"],
        }
        await self.send_frame("group_message", data)

    async def presence_status(self, event: dict[str, Any]) -> None:
        """A watched user's transition -> ``status_changed``, unless the snapshot had it."""
        key = str(event["user_id"])
        last = self._watching.get(key)
        seq = int(event.get("seq") or 0)
        if last is None or seq <= last:
            return
        self._watching[key] = seq
        if self._watched_online.get(key) == bool(event["is_online"]):
            return
        self._watched_online[key] = bool(event["is_online"])
        await self.send_frame(
            "status_changed",
            {
                "user_id": wire_user_id(event["user_id"]),
                "is_online": event["is_online"],
                "last_seen": event["last_seen"],
                "seq": seq,
            },
        )

    async def presence_group_member(self, event: dict[str, Any]) -> None:
        """A user joined or left a joined group -> ``group_presence``.

        Updates are ordered by the group's version: those older than the member list
        this connection sent, or than a newer update about the same user, are dropped.
        """
        name = event["group"]
        view = self._rooms.get(name)
        version = int(event["version"])
        if view is None or event.get("origin") == self.channel_name or version <= view.floor:
            return
        limit = rooms.member_limit()
        if event["count_before"] > limit or event["count"] > limit:
            # The group crosses the limit (updates are sent for crossings only).
            if version <= view.latest:
                return
            view.latest = version
            if event["count"] > limit:
                if view.full:
                    view.full, view.count = False, event["count"]
                    await self.send_frame(
                        "group_presence",
                        {"group": name, "count": event["count"], "count_only": True},
                    )
            else:
                await self.send_frame("group_presence", await self._room_snapshot(name))
            return
        if not view.full:
            # Small again, but this connection missed the crossing: start over.
            if version > view.latest:
                await self.send_frame("group_presence", await self._room_snapshot(name))
            return
        user = str(event["user_id"])
        if version <= view.user_versions.get(user, 0):
            return
        view.user_versions[user] = version
        if version > view.latest:
            view.latest, view.count = version, event["count"]
        await self.send_frame(
            "group_presence",
            {
                "group": name,
                "user_id": event["user_id"],
                "joined": event["joined"],
                "count": view.count,
            },
        )


@database_sync_to_async
def _user_exists(pk: Any) -> bool:
    return bool(get_user_model()._default_manager.filter(pk=pk).exists())


class _LayerOutage:
    """How many of this process's connections are retrying the channel layer now.

    Lets a layer outage log one WARNING when the first connection fails and one INFO when
    the last failing connection reached the layer again, instead of one WARNING per
    socket.
    """

    def __init__(self) -> None:
        self.failing = 0
        self.since = 0.0

    def begin(self) -> bool:
        """Count a connection that started failing; True if it is the first one."""
        self.failing += 1
        if self.failing == 1:
            self.since = time.monotonic()
            return True
        return False

    def end(self, recovered: bool) -> None:
        """Count a failing connection that reached the layer again (or ended)."""
        self.failing -= 1
        if self.failing == 0 and recovered:
            logger.info(
                "Channel layer available again after %.1f s",
                time.monotonic() - self.since,
                extra={"server": SERVER_ID},
            )


_layer_outage = _LayerOutage()


@database_sync_to_async
def _last_seen_of(pks: list[Any]) -> dict[str, str | None]:
    """``last_seen`` (ISO 8601) of these users from the DB, keyed by ``str(pk)``: one query."""
    rows = get_user_model()._default_manager.filter(pk__in=pks).values_list("pk", "last_seen")
    return {str(pk): seen.isoformat() if seen else None for pk, seen in rows}
