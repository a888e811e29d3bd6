"""The users app: the platform's custom user model and its pages."""

from django.apps import AppConfig


class UsersConfig(AppConfig):
    """Users, the dashboard, messages, notifications and groups."""

    name = "users"
    default_auto_field = "django.db.models.BigAutoField"
