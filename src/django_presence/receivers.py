"""Signal receivers connected in ``AppConfig.ready()``: close sockets on logout and on
password change (``DISCONNECT_ON_LOGOUT``, ``DISCONNECT_ON_PASSWORD_CHANGE``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save

from .conf import presence_settings


def disconnect_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Close the user's sockets everywhere when they log out."""
    if user is not None and presence_settings.DISCONNECT_ON_LOGOUT:
        from .services import user_online_service

        user_online_service.disconnect_user(user.pk)


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
        from .services import user_online_service

        user_online_service.disconnect_user(instance.pk)


def connect() -> None:
    """Connect the receivers (idempotent)."""
    user_logged_out.connect(disconnect_on_logout, dispatch_uid="django_presence.logout")
    post_save.connect(
        disconnect_on_password_change,
        sender=get_user_model(),
        dispatch_uid="django_presence.password_change",
    )
