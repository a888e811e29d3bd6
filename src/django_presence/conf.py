"""Settings for django_presence, read lazily from the ``DJANGO_PRESENCE`` dict.

Every attribute of :data:`presence_settings` is looked up in ``settings.DJANGO_PRESENCE``
when it is accessed, falling back to :data:`DEFAULTS`, so ``override_settings`` works in
tests. Nothing is read at import time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .exceptions import PresenceImproperlyConfigured

SETTING_NAME = "DJANGO_PRESENCE"

#: Every key of ``DJANGO_PRESENCE`` with its default. ``docs/settings.md`` explains each.
DEFAULTS: dict[str, Any] = {
    # Where presence lives: dotted path to a BasePresenceBackend subclass.
    "BACKEND": "django_presence.backends.memory.MemoryBackend",
    # Extra keyword arguments for the backend's constructor.
    "BACKEND_OPTIONS": {},
    # Used by the Redis backend.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "KEY_PREFIX": "presence",
    # Seconds a connection lives without a heartbeat (its lease).
    "CONNECTION_TTL": 60,
    # Seconds between two heartbeats (and sweeps) of one server process.
    "HEARTBEAT_INTERVAL": 15,
    # Seconds a user stays online after their last connection closes cleanly.
    "OFFLINE_GRACE_PERIOD": 5,
    # Write is_online/last_seen on the user model on every transition.
    "SYNC_USER_MODEL": True,
    # Seconds a batch of transitions waits for more before its side effects (DB write,
    # signals, status_changed) are applied together. 0: at once (batches still form under
    # load, from the transitions that arrive while one is being applied).
    "TRANSITION_BATCH_WINDOW": 0,
    # Channel layer alias used for status_changed and messaging.
    "CHANNEL_LAYER": "default",
    # JSON Web Token authentication (django_presence.middleware).
    "JWT_ALGORITHMS": ["HS256"],
    "JWT_SIGNING_KEY": None,  # None: settings.SECRET_KEY, read at call time.
    "JWT_VERIFYING_KEY": None,  # None: the signing key (symmetric algorithms).
    "JWT_USER_ID_CLAIM": "user_id",
    "JWT_AUDIENCE": None,
    "JWT_ISSUER": None,
    "JWT_LEEWAY": 0,
    # Close all of a user's sockets (user_online_service.disconnect_user) when they log
    # out, and when their password changes.
    "DISCONNECT_ON_LOGOUT": True,
    "DISCONNECT_ON_PASSWORD_CHANGE": True,
    # -- the ws/user/ consumer and messaging (issue 3) --
    # Dotted path of the authorization policy class (django_presence.policies).
    "POLICY": "django_presence.policies.DefaultPolicy",
    # Largest inbound frame in bytes; a larger one is answered with error too_large unread.
    "MAX_FRAME_SIZE": 65536,
    # Token bucket of each connection: frames per second sustained, and burst. None: off.
    "RATE_LIMIT_RATE": 10,
    "RATE_LIMIT_BURST": 20,
    # Token bucket of each user, shared by all of the user's connections in one process.
    "USER_RATE_LIMIT_RATE": 20,
    "USER_RATE_LIMIT_BURST": 40,
    # A connection answered rate_limited this many times within FLOOD_WINDOW seconds is
    # closed with code 4008.
    "FLOOD_CLOSE_AFTER": 20,
    "FLOOD_WINDOW": 10,
    # Most users one connection may watch (subscribe_presence) and groups it may join.
    "MAX_WATCHED_USERS": 1000,
    "MAX_GROUPS": 100,
    # Groups with more members than this report a member count instead of the members
    # (Pusher's presence channels stop at 100 members).
    "GROUP_PRESENCE_MAX_MEMBERS": 100,
    # -- operations --
    # A callable, or its dotted path, called as hook(name, value, labels) on every counter
    # increment (django_presence.metrics). None: counters are only kept in-process.
    "METRICS_HOOK": None,
}

REMOVED_SETTINGS: dict[str, str] = {}


class PresenceSettings:
    """Lazy view of ``settings.DJANGO_PRESENCE`` merged with :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        """The ``DJANGO_PRESENCE`` dict as configured by the project (may be empty)."""
        value = getattr(settings, SETTING_NAME, {})
        if not isinstance(value, dict):
            raise PresenceImproperlyConfigured(
                f"settings.{SETTING_NAME} must be a dict, got {type(value).__name__}: {value!r}"
            )
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Unknown {SETTING_NAME} setting: {name!r}")
        try:
            return self._cache[name]
        except KeyError:
            pass
        user = self.user_settings
        for key in user:
            if key in REMOVED_SETTINGS:
                raise PresenceImproperlyConfigured(
                    f"{SETTING_NAME}[{key!r}] was removed: {REMOVED_SETTINGS[key]}"
                )
        value = user.get(name, DEFAULTS[name])
        self._cache[name] = value
        return value

    def reload(self) -> None:
        """Forget cached values; called whenever Django's settings change."""
        self._cache.clear()


#: The settings object every module of the package reads from.
presence_settings = PresenceSettings()


def number_setting(name: str, *, minimum: float = 0, allow_zero: bool = True) -> float:
    """Return the numeric setting ``name``, raising a clear error when it is not a number."""
    value = getattr(presence_settings, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PresenceImproperlyConfigured(
            f"{SETTING_NAME}[{name!r}] must be a number of seconds, got {value!r}."
        )
    if value < minimum or (not allow_zero and value == 0):
        raise PresenceImproperlyConfigured(
            f"{SETTING_NAME}[{name!r}] must be {'>' if not allow_zero else '>='} {minimum}, "
            f"got {value!r}."
        )
    return float(value)


@receiver(setting_changed)
def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING_NAME, "SECRET_KEY", "AUTH_USER_MODEL", "CHANNEL_LAYERS"):
        presence_settings.reload()
        from . import backends

        backends.reset_backend()
