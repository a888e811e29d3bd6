"""The fault servers' presence and channel-layer settings, built from their environment.

:mod:`tests.faults.settings` uses these for the server processes; a test that sends from
its own process (``user_messaging_service`` under ``override_settings``) uses the same
functions, with :meth:`tests.faults.harness.Stack.env`, so both ends agree on the Redis,
the key prefix and the delivery settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def presence_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """``DJANGO_PRESENCE`` of a fault server whose environment is ``env``."""
    undelivered = env.get("FAULTS_UNDELIVERED_AFTER", "30")
    return {
        "BACKEND": "django_presence.backends.redis.RedisBackend",
        "REDIS_URL": env["FAULTS_REDIS_URL"],
        "KEY_PREFIX": env.get("FAULTS_KEY_PREFIX", "faults"),
        "CONNECTION_TTL": float(env.get("FAULTS_TTL", "3")),
        "HEARTBEAT_INTERVAL": float(env.get("FAULTS_HEARTBEAT", "1")),
        "OFFLINE_GRACE_PERIOD": float(env.get("FAULTS_GRACE", "0")),
        # Most tests were written against an open policy; tests/test_security.py covers the
        # private default.
        "POLICY": "django_presence.policies.OpenPolicy",
        "HISTORY_SIZE": int(env.get("FAULTS_HISTORY_SIZE", "300")),
        "UNDELIVERED_AFTER": None if undelivered == "off" else float(undelivered),
    }


def channel_layers(redis_url: str) -> dict[str, Any]:
    """``CHANNEL_LAYERS`` of a fault server on ``redis_url``."""
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 defaults socket_timeout to 5 s, which makes channels_redis's idle
            # blocking receive raise (django/channels_redis#422): give it more than its
            # timeout.
            "CONFIG": {"hosts": [{"address": redis_url, "socket_timeout": 30}], "capacity": 1000},
        }
    }
