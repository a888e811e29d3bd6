"""System checks. IDs are ``django_presence.E###`` / ``W###`` and never reused.

========================  ==============================================================
ID                        Problem
========================  ==============================================================
django_presence.E001      ``SYNC_USER_MODEL`` is on but the user model lacks
                          ``OnlineStatusMixin``'s fields.
django_presence.E002      ``BACKEND`` cannot be imported or is not a backend class.
django_presence.E003      Removed in 0.1.0 (redis-py is a required dependency); never reused.
django_presence.E004      A time setting is not a positive number.
django_presence.E005      ``JWT_ALGORITHMS`` is empty, not a list, or allows ``none``.
django_presence.E006      ``JWT_ALGORITHMS`` mixes HMAC and public-key algorithms.
django_presence.E007      A public-key algorithm is allowed but ``JWT_VERIFYING_KEY`` is unset.
django_presence.E008      ``DJANGO_PRESENCE`` is not a dict.
django_presence.E009      ``METRICS_HOOK`` cannot be imported or is not callable.
django_presence.W001      The in-memory backend is used with ``DEBUG = False``.
django_presence.W002      ``HEARTBEAT_INTERVAL`` is more than half of ``CONNECTION_TTL``.
django_presence.W003      The HMAC signing key is shorter than 32 bytes.
django_presence.W004      ``DJANGO_PRESENCE`` has a key the package does not know.
========================  ==============================================================
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from .conf import DEFAULTS, SETTING_NAME, presence_settings

_HMAC = {"HS256", "HS384", "HS512"}
_MEMORY_BACKEND = "django_presence.backends.memory.MemoryBackend"


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """Check ``DJANGO_PRESENCE``."""
    user = getattr(settings, SETTING_NAME, {})
    if not isinstance(user, dict):
        return [
            Error(
                f"settings.{SETTING_NAME} must be a dict, got {type(user).__name__}: {user!r}.",
                id="django_presence.E008",
            )
        ]
    messages: list[CheckMessage] = []
    messages += [
        Warning(
            f"{SETTING_NAME}[{key!r}] is not a setting of django_presence.",
            hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            id="django_presence.W004",
        )
        for key in user
        if key not in DEFAULTS
    ]
    messages += _check_backend()
    messages += _check_times()
    messages += _check_jwt()
    messages += _check_metrics_hook()
    return messages


def _check_metrics_hook() -> list[CheckMessage]:
    from .metrics import load_hook

    try:
        load_hook(presence_settings.METRICS_HOOK)
    except ValueError as e:
        return [Error(f"{e}.", id="django_presence.E009")]
    return []


def _check_backend() -> list[CheckMessage]:
    path = presence_settings.BACKEND
    if not isinstance(path, str):
        return [
            Error(
                f"{SETTING_NAME}['BACKEND'] must be the dotted path of a backend class, "
                f"got {path!r}.",
                id="django_presence.E002",
            )
        ]
    try:
        backend_class = import_string(path)
    except ImportError as e:
        return [
            Error(
                f"{SETTING_NAME}['BACKEND'] = {path!r} cannot be imported: {e}",
                id="django_presence.E002",
            )
        ]
    from .backends import BasePresenceBackend

    if not (isinstance(backend_class, type) and issubclass(backend_class, BasePresenceBackend)):
        return [
            Error(
                f"{SETTING_NAME}['BACKEND'] = {path!r} is not a subclass of "
                "django_presence.backends.BasePresenceBackend.",
                id="django_presence.E002",
            )
        ]
    if not backend_class.shared_across_processes and not settings.DEBUG:
        return [
            Warning(
                f"{SETTING_NAME}['BACKEND'] = {path!r} keeps presence in one process; with "
                "several server processes each sees only its own users.",
                hint="Use django_presence.backends.redis.RedisBackend in production.",
                id="django_presence.W001",
            )
        ]
    return []


def _check_times() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    values = {}
    for name, allow_zero in (
        ("CONNECTION_TTL", False),
        ("HEARTBEAT_INTERVAL", False),
        ("OFFLINE_GRACE_PERIOD", True),
        ("TRANSITION_BATCH_WINDOW", True),
    ):
        value = getattr(presence_settings, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (value == 0 and not allow_zero)
        ):
            messages.append(
                Error(
                    f"{SETTING_NAME}[{name!r}] must be a "
                    f"{'non-negative' if allow_zero else 'positive'} number of seconds, "
                    f"got {value!r}.",
                    id="django_presence.E004",
                )
            )
        else:
            values[name] = value
    ttl, interval = values.get("CONNECTION_TTL"), values.get("HEARTBEAT_INTERVAL")
    if ttl is not None and interval is not None and interval > ttl / 2:
        messages.append(
            Warning(
                f"{SETTING_NAME}['HEARTBEAT_INTERVAL'] = {interval!r} is more than half of "
                f"CONNECTION_TTL = {ttl!r}: one late heartbeat makes live users flicker "
                "offline.",
                hint="Keep HEARTBEAT_INTERVAL at most CONNECTION_TTL / 2 (a third is safer).",
                id="django_presence.W002",
            )
        )
    return messages


def _check_jwt() -> list[CheckMessage]:
    algorithms = presence_settings.JWT_ALGORITHMS
    if (
        not isinstance(algorithms, (list, tuple))
        or not algorithms
        or not all(isinstance(a, str) and a and a.lower() != "none" for a in algorithms)
    ):
        return [
            Error(
                f"{SETTING_NAME}['JWT_ALGORITHMS'] must be a non-empty list of algorithm names "
                f"other than 'none', got {algorithms!r}.",
                id="django_presence.E005",
            )
        ]
    hmac = {a for a in algorithms if a in _HMAC}
    if hmac and len(hmac) != len(set(algorithms)):
        return [
            Error(
                f"{SETTING_NAME}['JWT_ALGORITHMS'] = {algorithms!r} mixes HMAC and public-key "
                "algorithms, which allows key-confusion attacks.",
                hint="Allow only HMAC algorithms or only public-key ones.",
                id="django_presence.E006",
            )
        ]
    if not hmac:
        if not presence_settings.JWT_VERIFYING_KEY:
            return [
                Error(
                    f"{SETTING_NAME}['JWT_ALGORITHMS'] = {algorithms!r} needs a public key in "
                    f"{SETTING_NAME}['JWT_VERIFYING_KEY'], which is not set.",
                    id="django_presence.E007",
                )
            ]
        return []
    key = presence_settings.JWT_SIGNING_KEY or settings.SECRET_KEY
    if not isinstance(key, (str, bytes)):
        return []  # PyJWT rejects it with a clear error on first use.
    if len(key.encode() if isinstance(key, str) else key) < 32:
        return [
            Warning(
                "The JWT signing key (JWT_SIGNING_KEY, or SECRET_KEY) is shorter than 32 "
                "bytes, which makes HMAC tokens guessable.",
                id="django_presence.W003",
            )
        ]
    return []


def check_user_model(**kwargs: Any) -> list[CheckMessage]:
    """Check that the user model has ``is_online`` and ``last_seen`` when they are synced."""
    if not isinstance(getattr(settings, SETTING_NAME, {}), dict):
        return []  # Reported as E008 by check_settings; nothing else can be read.
    if not presence_settings.SYNC_USER_MODEL:
        return []
    from django.contrib.auth import get_user_model

    from .models import OnlineStatusMixin

    user_model = get_user_model()
    if issubclass(user_model, OnlineStatusMixin):
        return []
    return [
        Error(
            f"{SETTING_NAME}['SYNC_USER_MODEL'] is on, but the user model "
            f"{user_model._meta.label} does not inherit django_presence.models."
            "OnlineStatusMixin.",
            hint="Inherit the mixin in your user model, or set SYNC_USER_MODEL to False.",
            obj=user_model,
            id="django_presence.E001",
        )
    ]
