"""Presence backends and the process-wide backend instance.

:func:`get_backend` builds the backend named by ``DJANGO_PRESENCE["BACKEND"]`` on first
use and caches it; like Channels' ``ChannelLayerManager``, this module drops its cache
itself whenever a setting the backend depends on changes (so ``override_settings``
switches backends).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from ..conf import SETTING_NAME, presence_settings, setting_key, valid_setting
from ..exceptions import PresenceImproperlyConfigured
from .base import (
    OFFLINE,
    STATES,
    STATUSES,
    Availability,
    BasePresenceBackend,
    Change,
    ConnectionData,
    ConnectionInfo,
    MemberChange,
    PublicPresence,
    StreamCursor,
    StreamEntry,
    StreamLimits,
    StreamPosition,
    StreamRead,
    SweepResult,
    Transition,
    Undelivered,
)

__all__ = [
    "OFFLINE",
    "STATES",
    "STATUSES",
    "Availability",
    "BasePresenceBackend",
    "Change",
    "ConnectionData",
    "ConnectionInfo",
    "MemberChange",
    "PublicPresence",
    "StreamCursor",
    "StreamEntry",
    "StreamLimits",
    "StreamPosition",
    "StreamRead",
    "SweepResult",
    "Transition",
    "Undelivered",
    "get_backend",
    "load_backend",
    "reset_backend",
]

_lock = threading.Lock()
_backend: BasePresenceBackend | None = None


def load_backend(path: Any, options: dict[str, object] | None = None) -> BasePresenceBackend:
    """Build the backend class ``path`` names (or is) with the keyword arguments ``options``.

    ``path`` and ``options`` are validated as ``DJANGO_PRESENCE['BACKEND']`` and
    ``['BACKEND_OPTIONS']`` (:data:`django_presence.conf.SPECS`); a bad one raises
    :class:`~django_presence.exceptions.PresenceImproperlyConfigured`.
    """
    backend_class = valid_setting("BACKEND", path)
    kwargs = valid_setting("BACKEND_OPTIONS", options)
    try:
        backend: BasePresenceBackend = backend_class(**kwargs)
    except TypeError as e:
        raise PresenceImproperlyConfigured(
            f"{setting_key('BACKEND_OPTIONS')} = {options!r} do not fit {path!r}: {e}"
        ) from e
    return backend


def get_backend() -> BasePresenceBackend:
    """The configured backend, built on first use and shared by the whole process."""
    global _backend
    backend = _backend
    if backend is None:
        with _lock:
            if _backend is None:
                _backend = load_backend(
                    presence_settings.BACKEND, presence_settings.BACKEND_OPTIONS
                )
            backend = _backend
    return backend


def reset_backend() -> None:
    """Forget the cached backend; the next :func:`get_backend` builds a new one."""
    global _backend
    with _lock:
        _backend = None


# The backend is built from DJANGO_PRESENCE and holds ids of AUTH_USER_MODEL's users; a
# new CHANNEL_LAYERS means another deployment, for which Channels drops its layers too.
# SECRET_KEY is not among them: nothing here depends on it.
_RESET_ON = frozenset({SETTING_NAME, "AUTH_USER_MODEL", "CHANNEL_LAYERS"})


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _RESET_ON:
        reset_backend()
