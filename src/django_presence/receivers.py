"""Signal receivers connected in ``AppConfig.ready()``: close a user's sockets everywhere on
logout and on password change (``DISCONNECT_ON_LOGOUT``, ``DISCONNECT_ON_PASSWORD_CHANGE``,
code 4010), and when the account is deactivated or deleted (``DISCONNECT_ON_DEACTIVATE``,
code 4011).

They follow ``post_save`` and ``post_delete``. A queryset's ``delete()`` sends
``post_delete`` for each user, but its ``update()`` sends no ``post_save``: after
``update(is_active=False)``, call
``user_online_service.disconnect_user(pk, code=protocol.CLOSE_REVOKED)`` for each user."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save

from . import protocol
from .conf import presence_settings
from .exceptions import PresenceError

logger = logging.getLogger(__name__)


def disconnect_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Close the user's sockets everywhere when they log out."""
    if user is not None and presence_settings.DISCONNECT_ON_LOGOUT:
        _disconnect(user.pk, protocol.CLOSE_DISCONNECTED)


def disconnect_on_password_change(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Close the user's sockets everywhere when their password was just changed.

    ``AbstractBaseUser.set_password()`` keeps the raw password in ``_password`` until the
    save that follows it completes (Django calls ``password_validation.password_changed``
    then), so it is set during exactly the ``post_save`` of a password change.
    """
    if (
        getattr(instance, "_password", None) is not None
        and not kwargs.get("created")
        and presence_settings.DISCONNECT_ON_PASSWORD_CHANGE
    ):
        _disconnect(instance.pk, protocol.CLOSE_DISCONNECTED)


def disconnect_on_deactivate(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Close the user's sockets everywhere (4011) when their account is saved inactive.

    Runs for every save of an inactive user; one with no connection costs one backend
    read. A new socket of theirs is refused at the handshake (an inactive user's token,
    or session, authenticates nobody).
    """
    if (
        getattr(instance, "is_active", True) is False
        and not kwargs.get("created")
        and presence_settings.DISCONNECT_ON_DEACTIVATE
    ):
        _disconnect(instance.pk, protocol.CLOSE_REVOKED)


def disconnect_on_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Close a deleted user's sockets everywhere (4011)."""
    if presence_settings.DISCONNECT_ON_DEACTIVATE:
        _disconnect(instance.pk, protocol.CLOSE_REVOKED)


def _disconnect(pk: Any, code: int) -> None:
    from .services import user_online_service

    try:
        user_online_service.disconnect_user(pk, code=code)
    except PresenceError:
        # The backend is down: the logout, save or delete that sent the signal must not
        # fail for it. The sockets stay open until their lease or token ends: say so.
        logger.exception("Could not close the sockets of user %s (code %d)", pk, code)


def connect() -> None:
    """Connect the receivers (idempotent)."""
    user_logged_out.connect(disconnect_on_logout, dispatch_uid="django_presence.logout")
    post_save.connect(
        disconnect_on_password_change,
        sender=get_user_model(),
        dispatch_uid="django_presence.password_change",
    )
    post_save.connect(
        disconnect_on_deactivate,
        sender=get_user_model(),
        dispatch_uid="django_presence.deactivate",
    )
    post_delete.connect(
        disconnect_on_delete, sender=get_user_model(), dispatch_uid="django_presence.delete"
    )
