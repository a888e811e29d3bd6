"""The user model every variant shares, so that each one authenticates against the same table."""

from django.contrib.auth.models import AbstractUser

from django_presence.models import OnlineStatusMixin


class User(OnlineStatusMixin, AbstractUser):
    """A user with ``is_online`` and ``last_seen`` (indexed primary key for token auth)."""
