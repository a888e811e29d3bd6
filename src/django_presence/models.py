"""The database copy of presence: fields for a user model, or the package's own table.

``DJANGO_PRESENCE["STORE"]`` chooses where transitions are written (``docs/settings.md``):

- ``"user"``: on the user model's own fields (``ONLINE_FIELD``, ``LAST_SEEN_FIELD``),
  which :class:`OnlineStatusMixin` provides to a custom user model;
- ``"table"``: on :class:`UserPresence`, one row per user, for projects on the default
  ``auth.User`` (``User.objects.filter(presence__is_online=True)``);
- ``None``: nowhere.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class OnlineStatusMixin(models.Model):
    """Give a user model ``is_online`` and ``last_seen``, kept in sync with presence.

    Inherit it in your custom user model::

        from django.contrib.auth.models import AbstractUser
        from django_presence.models import OnlineStatusMixin

        class User(AbstractUser, OnlineStatusMixin):
            pass

    Either order of the bases keeps ``AbstractUser``'s ``Meta`` (its verbose names): the
    mixin leaves no ``Meta`` of its own for the model to inherit.

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


# Django keeps an abstract model's Meta (with abstract reset to False) as a class
# attribute, and a model without a Meta of its own inherits the first one in its MRO: in
# User(OnlineStatusMixin, AbstractUser) this one, which would replace AbstractUser's
# (verbose names, a pointless AlterModelOptions migration). With no Meta here, the next
# base's is found.
del OnlineStatusMixin.Meta


class UserPresence(OnlineStatusMixin):
    """One row per user who has ever connected: the database copy for ``STORE = "table"``.

    Written on every transition (an upsert of the batch's users); read from the user model
    through the reverse relation: ``User.objects.filter(presence__is_online=True)``.
    Users who never connected have no row (``presence__is_online=False`` leaves them out;
    ``exclude(presence__is_online=True)`` counts them offline). Its ``is_online`` and
    ``last_seen`` are :class:`OnlineStatusMixin`'s.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="presence",
        verbose_name=_("user"),
    )

    class Meta:
        verbose_name = _("user presence")
        verbose_name_plural = _("user presences")

    def __str__(self) -> str:
        return f"{self.user_id}: {'online' if self.is_online else 'offline'}"
