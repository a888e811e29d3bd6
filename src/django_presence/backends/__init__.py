"""Presence backends and the process-wide backend instance.

:func:`get_backend` builds the backend named by ``DJANGO_PRESENCE["BACKEND"]`` on first
use and caches it; the cache is dropped whenever Django's settings change (so
``override_settings`` switches backends), like Channels' ``ChannelLayerManager``.
"""

from __future__ import annotations

import threading

from django.utils.module_loading import import_string

from ..exceptions import PresenceImproperlyConfigured
from .base import (
    BasePresenceBackend,
    Change,
    ConnectionInfo,
    MemberChange,
    SweepResult,
    Transition,
)

__all__ = [
    "BasePresenceBackend",
    "Change",
    "ConnectionInfo",
    "MemberChange",
    "SweepResult",
    "Transition",
    "get_backend",
    "load_backend",
    "reset_backend",
]

_lock = threading.Lock()
_backend: BasePresenceBackend | None = None


def load_backend(path: str, options: dict[str, object] | None = None) -> BasePresenceBackend:
    """Import the backend class at dotted ``path`` and build it with ``options``."""
    if not isinstance(path, str):
        raise PresenceImproperlyConfigured(
            f"DJANGO_PRESENCE['BACKEND'] must be the dotted path of a backend class, got {path!r}."
        )
    try:
        backend_class = import_string(path)
    except ImportError as e:
        raise PresenceImproperlyConfigured(
            f"DJANGO_PRESENCE['BACKEND'] = {path!r} could not be imported: {e}"
        ) from e
    if not (isinstance(backend_class, type) and issubclass(backend_class, BasePresenceBackend)):
        raise PresenceImproperlyConfigured(
            f"DJANGO_PRESENCE['BACKEND'] = {path!r} is not a subclass of "
            "django_presence.backends.BasePresenceBackend."
        )
    try:
        return backend_class(**(options or {}))
    except TypeError as e:
        raise PresenceImproperlyConfigured(
            f"DJANGO_PRESENCE['BACKEND_OPTIONS'] = {options!r} do not fit {path}: {e}"
        ) from e


def get_backend() -> BasePresenceBackend:
    """The configured backend, built on first use and shared by the whole process."""
    global _backend
    backend = _backend
    if backend is None:
        from ..conf import presence_settings

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
