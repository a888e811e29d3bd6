"""Template context shared by every page of the example."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest

from django_presence.conf import presence_settings


def people_names(request: HttpRequest) -> dict[str, Any]:
    """``{pk: display name}`` of every user, for the pages' scripts (a small demo only)."""
    if not request.user.is_authenticated:
        return {}
    names = {
        str(user.pk): user.get_username()
        for user in get_user_model().objects.only("pk", "username")
    }
    return {"people_names": names}


def presence_client_options(request: HttpRequest) -> dict[str, Any]:
    """How often the pages' presence.js reports activity, in ms: a quarter of ``IDLE_AFTER``.

    presence.js sends at most one ``activity`` frame per ``activityInterval`` (30 s by
    default), which suits the package's 5 minutes of ``IDLE_AFTER``; a project that turns
    users away sooner reports more often, so that nobody active shows as away.
    """
    idle = float(presence_settings.IDLE_AFTER)
    interval = min(30.0, idle / 4) if idle > 0 else 30.0
    return {"presence_activity_interval": max(100, round(interval * 1000))}
