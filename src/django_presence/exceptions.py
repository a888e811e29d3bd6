"""Exceptions raised by django_presence."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class PresenceError(Exception):
    """Base class of every error django_presence raises on purpose."""


class PresenceImproperlyConfigured(PresenceError, ImproperlyConfigured):
    """A ``DJANGO_PRESENCE`` setting is wrong; the message names the key and the value."""


class PresenceImproperlyInstalled(PresenceImproperlyConfigured, ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""

    def __init__(self, missing_package: str, extra: str, feature: str) -> None:
        self.missing_package = missing_package
        self.extra = extra
        super().__init__(
            f"{feature} needs the {missing_package!r} package, which is not installed. "
            f"Install it with: pip install 'django-user-presence[{extra}]'"
        )


class BackendUnavailable(PresenceError):
    """The presence backend could not be reached (for example Redis is down).

    The original error is chained as ``__cause__``.
    """


class InvalidToken(PresenceError):
    """A WebSocket authentication token was rejected; ``str()`` says why.

    ``reason`` is a short code for metrics: ``expired``, ``invalid`` (bad signature,
    algorithm, claims or format), ``not_access`` (a refresh token), ``unknown_user`` or
    ``inactive_user``.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason
