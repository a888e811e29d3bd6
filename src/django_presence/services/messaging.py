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
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.utils import timezone

from .. import groups
from ..conf import SETTING_NAME, presence_settings
from ..exceptions import PresenceImproperlyConfigured

#: Channel-layer message types, handled by ``UserConsumer.presence_<name>``. The
#: ``presence.`` namespace keeps them apart from a project's own handlers.
NOTIFICATION = "presence.notification"
DIRECT_MESSAGE = "presence.direct_message"
BROADCAST = "presence.broadcast"
GROUP_MESSAGE = "presence.group_message"

_NOTIFICATION_KEYS = frozenset({"title", "message"})
_BROADCAST_KEYS = frozenset({"message"})
_GROUP_KEYS = frozenset({"group", "from_user_id", "message"})


def check_user_id(user_id: Any, name: str = "user_id") -> Any:
    """Return ``user_id`` if it can be a user's primary key, else raise TypeError."""
    if (
        user_id is None
        or isinstance(user_id, bool)
        or not isinstance(user_id, (int, str, uuid.UUID))
    ):
        raise TypeError(
            f"{name} must be a user's primary key (an int, str or UUID), got "
            f"{type(user_id).__name__}: {user_id!r}"
        )
    return user_id


def wire_user_id(user_id: Any) -> Any:
    """A user id as it travels: the primary key's Python value if it is an int, else str.

    Accepts a primary key or the string form the presence backend stores.
    """
    if isinstance(user_id, str):
        try:
            user_id = get_user_model()._meta.pk.to_python(user_id)
        except Exception:  # an id the user model cannot parse travels as it came
            return user_id
    return user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else str(user_id)


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
            "type": GROUP_MESSAGE,
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
            {"type": NOTIFICATION, "title": title, "message": message, "extra": extra},
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
                "type": DIRECT_MESSAGE,
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
            groups.broadcast_group(), {"type": BROADCAST, "message": message, "extra": extra}
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
