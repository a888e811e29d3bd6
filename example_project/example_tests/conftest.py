"""Fixtures of the example project's own tests (run with its settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Seeding hashes three demo passwords; PBKDF2's full cost buys the tests nothing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
async def fresh_channel_layer() -> AsyncIterator[None]:
    """Each test runs in its own event loop: give it its own channel layer, and close it.

    channels_redis binds its receive lock to the loop that first used it, so a layer
    cached by an earlier test fails in the next one; and connections left open (of the
    layer and of the presence backend) keep the loop's teardown waiting.
    """
    from channels.layers import channel_layers

    from django_presence.backends import get_backend, reset_backend

    channel_layers.backends.clear()
    yield
    for layer in list(channel_layers.backends.values()):
        close_pools = getattr(layer, "close_pools", None)
        if close_pools is not None:
            await close_pools()
    channel_layers.backends.clear()
    await get_backend().aclose()
    reset_backend()
