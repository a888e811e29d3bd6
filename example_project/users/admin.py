"""Admin of the users app: the stock user admin plus live presence."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest, HttpResponse

from django_presence.admin import OnlineStatusAdminMixin
from django_presence.services import user_online_service

from .models import User


@admin.register(User)
class PlatformUserAdmin(OnlineStatusAdminMixin, UserAdmin):
    """Adds the live "online now" column and filter, and the connection monitor.

    The monitor also shows each connection's device and activity (``web``, ``in_call``...)
    and each user's state, read for the page's users in one more backend round trip.
    """

    list_display = ("username", "is_staff", "last_seen")
    list_filter = ("is_staff",)
    presence_monitor_template = "users/admin/presence_monitor.html"

    def presence_monitor_view(self, request: HttpRequest) -> HttpResponse:
        """The package's monitor, with every connection's device, activity and data."""
        response = super().presence_monitor_view(request)
        context = getattr(response, "context_data", None)
        rows = (context or {}).get("rows") or []
        if rows:
            # Server code (no viewer) sees everything, invisible users included.
            presence = user_online_service.get_presence(
                [row.pk for row in rows if row.pk is not None]
            )
            context["availability_rows"] = [_availability_row(row, presence) for row in rows]
        return response


def _availability_row(row: Any, presence: dict[Any, Any]) -> dict[str, Any]:
    seen = presence.get(row.pk)
    connections = seen.connections if seen is not None else {}
    return {
        "row": row,
        "state": seen.state if seen is not None else "",
        "status": seen.status if seen is not None else "",
        "status_text": seen.status_text if seen is not None else "",
        "connections": [
            {"id": c.connection_id, "closing": c.closing, **connections.get(c.connection_id, {})}
            for c in row.connections
        ],
    }
