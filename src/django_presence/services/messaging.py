"""Messaging: :data:`user_messaging_service` reaches any user, group or everyone.

Every message goes through the channel layer named by ``DJANGO_PRESENCE["CHANNEL_LAYER"]``
to the groups that :class:`~django_presence.consumers.UserConsumer` joins, so it reaches
every open ``ws/user/`` connection of the users concerned, on every server sharing that
layer. Before it goes out, each message is stored in its stream (the user's, the group's,
or the broadcasts'; :mod:`django_presence.delivery`) and gets an offset: a client that
reconnects replays what it missed, and a message to a user that no client of theirs
acknowledged within ``UNDELIVERED_AFTER`` seconds is handed to the
:data:`~django_presence.signals.message_undelivered` signal. Each method returns a
:class:`~django_presence.delivery.Delivery` (the stream, offset and epoch); pass
``store=False`` for a message not worth replaying (a typing indicator): it then reaches
only the connections open at that moment, at most once. See docs/delivery.md.

The four methods are coroutines, as existing code awaits them::

    await user_messaging_service.send_notification_to_user(user.pk, "Hi", "Welcome back")

Each has a sync twin with the same arguments and a ``_sync`` suffix, for views, signal
receivers, Celery tasks, management commands and plain threads::

    user_messaging_service.send_notification_to_user_sync(user.pk, "Hi", "Welcome back")

The sync twins go through :func:`asgiref.sync.async_to_sync`: they work with or without an
event loop in the calling thread's process (a WSGI view, an ASGI sync view, a thread),
and raise :class:`RuntimeError` when called from async code, which must await the
coroutine instead.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from .. import delivery, groups, protocol
from ..conf import SETTING_NAME, presence_settings
from ..delivery import Delivery
from ..exceptions import PresenceImproperlyConfigured
from ..ids import check_user_id, user_key, wire_user_id

_NOTIFICATION_KEYS = frozenset({"title", "message"})
_BROADCAST_KEYS = frozenset({"message"})
_GROUP_KEYS = frozenset({"group", "from_user_id", "message"})


def _check_store(store: Any) -> bool:
    if not isinstance(store, bool):
        raise TypeError(f"store must be True or False, got {type(store).__name__}: {store!r}")
    return store


def _check_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}")
    return value


def _check_extra(extra: dict[str, Any], reserved: frozenset[str]) -> dict[str, Any]:
    clash = sorted(reserved & extra.keys())
    if clash:
        raise ValueError(f"Extra fields {clash!r} would overwrite the frame's own fields.")
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as e:
        raise TypeError(f"Extra fields must be JSON-serializable: {e}") from e
    return extra


def _layer() -> Any:
    alias = presence_settings.CHANNEL_LAYER
    layer = get_channel_layer(alias)
    if layer is None:
        raise PresenceImproperlyConfigured(
            f"{SETTING_NAME}['CHANNEL_LAYER'] = {alias!r} names no configured channel layer; "
            "add it to settings.CHANNEL_LAYERS."
        )
    return layer


async def send_group_message(
    group_name: str,
    message: str,
    *,
    from_user_id: Any = None,
    extra: dict[str, Any] | None = None,
    store: bool = True,
) -> Delivery:
    """Send a ``group_message`` to client group ``group_name``, from a user or the server.

    The function behind :meth:`UserMessagingService.send_to_group` and the consumer's
    ``group_message`` request; ``from_user_id`` is None for messages the server sends.
    """
    groups.validate_client_group_name(group_name)
    _check_text(message, "message")
    if from_user_id is not None:
        from_user_id = wire_user_id(check_user_id(from_user_id, "from_user_id"))
    extra = _check_extra(extra or {}, _GROUP_KEYS)
    event = {
        "type": protocol.EVENT_GROUP_MESSAGE,
        "group": group_name,
        "from_user_id": from_user_id,
        "message": message,
        "extra": extra,
    }
    return await _send(
        delivery.group_stream(group_name), groups.client_group(group_name), event, store
    )


async def _send(
    stream: str, layer_group: str, event: dict[str, Any], store: bool, user: str | None = None
) -> Delivery:
    """Store ``event`` in ``stream`` (unless ``store`` is False), then send it to the group."""
    layer = _layer()  # a misconfiguration raises before anything is stored
    sent = await delivery.publish(stream, event, store=_check_store(store), track_user=user)
    await layer.group_send(layer_group, event)
    return sent


class UserMessagingService:
    """Send notifications, direct messages, broadcasts and group messages in real time.

    Coroutines, plus sync twins suffixed ``_sync``. Arguments are validated before
    anything is sent: a wrong type raises :class:`TypeError`, a wrong value
    :class:`ValueError`. ``**extra`` fields travel in the frame's ``data`` beside the
    named ones and must be JSON-serializable. Each returns a
    :class:`~django_presence.delivery.Delivery`; ``store=False`` sends without storing
    (no replay, no fallback).
    """

    async def send_notification_to_user(
        self, user_id: Any, title: str, message: str, *, store: bool = True, **extra: Any
    ) -> Delivery:
        """Send a ``notification`` ``{title, message, **extra}`` to every tab of a user.

        Stored in the user's stream; if no client of the user acknowledges it within
        ``UNDELIVERED_AFTER`` seconds, ``message_undelivered`` is sent for it.
        """
        key = user_key(user_id)
        _check_text(title, "title")
        _check_text(message, "message")
        extra = _check_extra(extra, _NOTIFICATION_KEYS)
        event = {
            "type": protocol.EVENT_NOTIFICATION,
            "title": title,
            "message": message,
            "extra": extra,
        }
        return await _send(
            delivery.user_stream(key), groups.user_group(user_id), event, store, key
        )

    async def send_message_to_user(
        self, from_user_id: Any, target_user_id: Any, message: str, *, store: bool = True
    ) -> Delivery:
        """Send a ``direct_message`` ``{from_user_id, message, sent_at}`` to every tab.

        ``from_user_id`` is trusted as given: code that relays a client's message must
        pass the authenticated user's id, as the ``ws/user/`` consumer does. Stored and
        followed up like a notification.
        """
        check_user_id(from_user_id, "from_user_id")
        key = user_key(check_user_id(target_user_id, "target_user_id"))
        _check_text(message, "message")
        event = {
            "type": protocol.EVENT_DIRECT_MESSAGE,
            "from_user_id": wire_user_id(from_user_id),
            "message": message,
            "sent_at": timezone.now().isoformat(),
        }
        return await _send(
            delivery.user_stream(key), groups.user_group(target_user_id), event, store, key
        )

    async def broadcast_system_message(
        self, message: str, *, store: bool = True, **extra: Any
    ) -> Delivery:
        """Send a ``system_broadcast`` ``{message, **extra}`` to every ``ws/user/`` connection.

        Stored once, in the broadcast stream (not once per user).
        """
        _check_text(message, "message")
        extra = _check_extra(extra, _BROADCAST_KEYS)
        event = {"type": protocol.EVENT_BROADCAST, "message": message, "extra": extra}
        return await _send(delivery.BROADCAST_STREAM, groups.broadcast_group(), event, store)

    async def send_to_group(
        self, group_name: str, message: str, *, store: bool = True, **extra: Any
    ) -> Delivery:
        """Send a ``group_message`` ``{group, from_user_id: null, message, **extra}``.

        Reaches every connection that joined client group ``group_name`` (the name clients
        use in ``join_group``), with ``from_user_id`` null: the server sent it. Stored
        once, in the group's stream.
        """
        if not isinstance(group_name, str):
            raise TypeError(
                f"group_name must be a str, got {type(group_name).__name__}: {group_name!r}"
            )
        return await send_group_message(group_name, message, extra=extra, store=store)

    # -- what a user has not received ------------------------------------------------------

    async def aget_pending_messages(
        self, user_id: Any, *, unacknowledged: bool = False
    ) -> list[dict[str, Any]]:
        """The stored messages to a user that no client of theirs received (or acked).

        Each is the frame a client would get (``{"type", "data", "stream", "offset",
        "epoch"}``), oldest first, as far as the history still holds them. With
        ``unacknowledged``, the messages after the last one a client acknowledged;
        otherwise after the last one sent to a client (recorded once per heartbeat
        interval). Sync twin: :meth:`get_pending_messages`.
        """
        return await delivery.pending(user_key(user_id), unacknowledged=unacknowledged)

    def get_pending_messages(
        self, user_id: Any, *, unacknowledged: bool = False
    ) -> list[dict[str, Any]]:
        """Sync form of :meth:`aget_pending_messages`."""
        return async_to_sync(self.aget_pending_messages)(user_id, unacknowledged=unacknowledged)

    async def ahand_over_undelivered(self) -> int:
        """Send ``message_undelivered`` for the due messages now; return how many.

        Every ASGI server process that served a connection does this each heartbeat
        interval; call it from a periodic task (Celery beat, cron) too if your servers
        can be idle with nobody connected. Sync twin: :meth:`hand_over_undelivered`.
        """
        return await delivery.hand_over_undelivered()

    def hand_over_undelivered(self) -> int:
        """Sync form of :meth:`ahand_over_undelivered`."""
        return async_to_sync(self.ahand_over_undelivered)()

    # -- sync twins ------------------------------------------------------------------------

    def send_notification_to_user_sync(
        self, user_id: Any, title: str, message: str, *, store: bool = True, **extra: Any
    ) -> Delivery:
        """Sync form of :meth:`send_notification_to_user`."""
        return async_to_sync(self.send_notification_to_user)(
            user_id, title, message, store=store, **extra
        )

    def send_message_to_user_sync(
        self, from_user_id: Any, target_user_id: Any, message: str, *, store: bool = True
    ) -> Delivery:
        """Sync form of :meth:`send_message_to_user`."""
        return async_to_sync(self.send_message_to_user)(
            from_user_id, target_user_id, message, store=store
        )

    def broadcast_system_message_sync(
        self, message: str, *, store: bool = True, **extra: Any
    ) -> Delivery:
        """Sync form of :meth:`broadcast_system_message`."""
        return async_to_sync(self.broadcast_system_message)(message, store=store, **extra)

    def send_to_group_sync(
        self, group_name: str, message: str, *, store: bool = True, **extra: Any
    ) -> Delivery:
        """Sync form of :meth:`send_to_group`."""
        return async_to_sync(self.send_to_group)(group_name, message, store=store, **extra)


#: The process-wide messaging service.
user_messaging_service = UserMessagingService()
