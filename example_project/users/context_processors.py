"""Template context shared by every page of the example."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest


def people_names(request: HttpRequest) -> dict[str, Any]:
    """``{pk: display name}`` of every user, for the pages' scripts (a small demo only)."""
    if not request.user.is_authenticated:
        return {}
    names = {
        str(user.pk): user.get_username()
        for user in get_user_model().objects.only("pk", "username")
    }
    return {"people_names": names}
