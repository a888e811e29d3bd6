"""Mint real JSON Web Tokens for the tests."""

from __future__ import annotations

import time
from typing import Any

import jwt
from django.conf import settings


def make_token(
    user_id: Any,
    *,
    lifetime: float = 300,
    key: Any = None,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A token for ``user_id`` like djangorestframework-simplejwt's access tokens."""
    payload: dict[str, Any] = {"user_id": user_id, "exp": int(time.time() + lifetime)}
    payload.update(claims)
    signing_key = key if key is not None else settings.SECRET_KEY
    return jwt.encode(payload, signing_key, algorithm=algorithm)
