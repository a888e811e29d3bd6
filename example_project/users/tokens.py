"""Short-lived JSON Web Tokens for the pages' WebSocket connections."""

from __future__ import annotations

import time
from typing import Any

import jwt
from django.conf import settings


def issue_access_token(user: Any, lifetime: float | None = None) -> tuple[str, int]:
    """A token for ``user`` as ``django_presence.middleware`` verifies it, and its ``exp``.

    HS256 signed with ``SECRET_KEY``, with the claims ``user_id``, ``exp`` and
    ``token_type="access"`` (the shape djangorestframework-simplejwt issues).
    """
    if lifetime is None:
        lifetime = settings.EXAMPLE_TOKEN_LIFETIME
    exp = int(time.time() + lifetime)
    token = jwt.encode(
        {"user_id": user.pk, "exp": exp, "token_type": "access"},
        settings.SECRET_KEY,
        algorithm="HS256",
    )
    return token, exp
