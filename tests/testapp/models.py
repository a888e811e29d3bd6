from django.contrib.auth.models import AbstractUser

from django_presence.models import OnlineStatusMixin


class User(OnlineStatusMixin, AbstractUser):
    """The test project's custom user model, as a project adopting the package has."""
