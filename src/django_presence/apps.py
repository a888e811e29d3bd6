"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _


class DjangoPresenceConfig(AppConfig):
    """Registers the system checks and the logout/password receivers.

    Reads no settings and opens no connection.
    """

    name = "django_presence"
    verbose_name = _("User presence")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks as presence_checks
        from . import receivers

        checks.register(presence_checks.check_settings)
        checks.register(presence_checks.check_user_model, checks.Tags.models)
        checks.register(presence_checks.check_routes, checks.Tags.urls)
        receivers.connect()
