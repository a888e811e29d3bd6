"""Messaging: :data:`user_messaging_service` reaches any user, group or everyone.

Every message goes through the channel layer named by ``DJANGO_PRESENCE["CHANNEL_LAYER"]``
to the groups that :class:`~django_presence.consumers.UserConsumer` joins, so it reaches
every open ``ws/user/`` connection of the users concerned, on every server sharing that
layer. The channel layer delivers at most once: a message to a user with no open
connection is dropped, and so is one that finds a connection's queue full.

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

from .. import groups, protocol
from ..conf import SETTING_NAME, presence_settings
from ..exceptions import PresenceImproperlyConfigured
from ..ids import check_user_id, wire_user_id

_NOTIFICATION_KEYS = frozenset({"title", "message"})
_BROADCAST_KEYS = frozenset({"message"})
_GROUP_KEYS = frozenset({"group", "from_user_id", "message"})


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
    group_name: str, message: str, *, from_user_id: Any = None, extra: dict[str, Any] | None = None
) -> None:
    """Send a ``group_message`` to client group ``group_name``, from a user or the server.

    The function behind :meth:`UserMessagingService.send_to_group` and the consumer's
    ``group_message`` request; ``from_user_id`` is None for messages the server sends.
    """
    groups.validate_client_group_name(group_name)
    _check_text(message, "message")
    if from_user_id is not None:
        from_user_id = wire_user_id(check_user_id(from_user_id, "from_user_id"))
    extra = _check_extra(extra or {}, _GROUP_KEYS)
    await _layer().group_send(
        groups.client_group(group_name),
        {
            "type": protocol.EVENT_GROUP_MESSAGE,
            "group": group_name,
            "from_user_id": from_user_id,
            "message": message,
            "extra": extra,
        },
    )


class UserMessagingService:
    """Send notifications, direct messages, broadcasts and group messages in real time.

    Coroutines, plus sync twins suffixed ``_sync``. Arguments are validated before
    anything is sent: a wrong type raises :class:`TypeError`, a wrong value
    :class:`ValueError`. ``**extra`` fields travel in the frame's ``data`` beside the
    named ones and must be JSON-serializable.
    """

    async def send_notification_to_user(
        self, user_id: Any, title: str, message: str, **extra: Any
    ) -> None:
        """Send a ``notification`` ``{title, message, **extra}`` to every tab of a user."""
        check_user_id(user_id)
        _check_text(title, "title")
        _check_text(message, "message")
        extra = _check_extra(extra, _NOTIFICATION_KEYS)
        await _layer().group_send(
            groups.user_group(user_id),
            {
                "type": protocol.EVENT_NOTIFICATION,
                "title": title,
                "message": message,
                "extra": extra,
            },
        )

    async def send_message_to_user(
        self, from_user_id: Any, target_user_id: Any, message: str
    ) -> None:
        """Send a ``direct_message`` ``{from_user_id, message, sent_at}`` to every tab.

        ``from_user_id`` is trusted as given: code that relays a client's message must
        pass the authenticated user's id, as the ``ws/user/`` consumer does.
        """
        check_user_id(from_user_id, "from_user_id")
        check_user_id(target_user_id, "target_user_id")
        _check_text(message, "message")
        await _layer().group_send(
            groups.user_group(target_user_id),
            {
                "type": protocol.EVENT_DIRECT_MESSAGE,
                "from_user_id": wire_user_id(from_user_id),
                "message": message,
                "sent_at": timezone.now().isoformat(),
            },
        )

    async def broadcast_system_message(self, message: str, **extra: Any) -> None:
        """Send a ``system_broadcast`` ``{message, **extra}`` to every ``ws/user/`` connection."""
        _check_text(message, "message")
        extra = _check_extra(extra, _BROADCAST_KEYS)
        await _layer().group_send(
            groups.broadcast_group(),
            {"type": protocol.EVENT_BROADCAST, "message": message, "extra": extra},
        )

    async def send_to_group(self, group_name: str, message: str, **extra: Any) -> None:
        """Send a ``group_message`` ``{group, from_user_id: null, message, **extra}``.

        Reaches every connection that joined client group ``group_name`` (the name clients
        use in ``join_group``), with ``from_user_id`` null: the server sent it.
        """
        if not isinstance(group_name, str):
            raise TypeError(
                f"group_name must be a str, got {type(group_name).__name__}: {group_name!r}"
            )
        await send_group_message(group_name, message, extra=extra)

    # -- sync twins ------------------------------------------------------------------------

    def send_notification_to_user_sync(
        self, user_id: Any, title: str, message: str, **extra: Any
    ) -> None:
        """Sync form of :meth:`send_notification_to_user`."""
        async_to_sync(self.send_notification_to_user)(user_id, title, message, **extra)

    def send_message_to_user_sync(
        self, from_user_id: Any, target_user_id: Any, message: str
    ) -> None:
        """Sync form of :meth:`send_message_to_user`."""
        async_to_sync(self.send_message_to_user)(from_user_id, target_user_id, message)

    def broadcast_system_message_sync(self, message: str, **extra: Any) -> None:
        """Sync form of :meth:`broadcast_system_message`."""
        async_to_sync(self.broadcast_system_message)(message, **extra)

    def send_to_group_sync(self, group_name: str, message: str, **extra: Any) -> None:
        """Sync form of :meth:`send_to_group`."""
        async_to_sync(self.send_to_group)(group_name, message, **extra)


#: The process-wide messaging service.
user_messaging_service = UserMessagingService()
