"""Abstract model mixins."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class OnlineStatusMixin(models.Model):
    """Give a user model ``is_online`` and ``last_seen``, kept in sync with presence.

    Inherit it in your custom user model::

        from django.contrib.auth.models import AbstractUser
        from django_presence.models import OnlineStatusMixin

        class User(OnlineStatusMixin, AbstractUser):
            pass

    ``is_online`` is written only when the user comes online or goes offline (never for a
    second tab and never on a heartbeat); ``last_seen`` is set when the user goes offline.
    The live truth is the presence backend: ``user_online_service.is_user_online()``.
    """

    is_online = models.BooleanField(
        _("online"),
        default=False,
        db_index=True,
        help_text=_("Whether the user has at least one open connection."),
    )
    last_seen = models.DateTimeField(
        _("last seen"),
        null=True,
        blank=True,
        help_text=_("When the user last went offline."),
    )

    class Meta:
        abstract = True
