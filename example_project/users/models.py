"""The platform's user model, adopting the package's presence fields."""

from django.contrib.auth.models import AbstractUser

from django_presence.models import OnlineStatusMixin


class User(AbstractUser, OnlineStatusMixin):
    """A user of the platform, with ``is_online`` and ``last_seen`` kept by django_presence."""

    def __str__(self) -> str:
        return self.get_full_name() or self.username
