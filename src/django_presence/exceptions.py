"""Exceptions raised by django_presence.

Two families, kept apart on purpose (as django-anymail keeps ``AnymailConfigurationError``
out of ``AnymailError``)::

    django.core.exceptions.ImproperlyConfigured
    └── PresenceImproperlyConfigured      a DJANGO_PRESENCE setting is wrong
        └── PresenceImproperlyInstalled   (also ImportError) a package is missing

    PresenceError                         something failed at run time
    ├── BackendUnavailable                the backend cannot be reached
    ├── InvalidToken                      a WebSocket token was rejected
    └── TooManyConnections                a connection over a limit was refused

A configuration error is not a :class:`PresenceError`, so ``except PresenceError``, written
to survive run-time failures (Redis down, a bad token), never hides a misconfiguration:
that has to be fixed, and ``manage.py check`` reports it before the first socket.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class PresenceError(Exception):
    """Base class of the run-time errors django_presence raises on purpose.

    Configuration errors are not among them: see :class:`PresenceImproperlyConfigured`.
    """


class PresenceImproperlyConfigured(ImproperlyConfigured):
    """A ``DJANGO_PRESENCE`` setting is wrong; the message names the key and the value.

    Deliberately not a :class:`PresenceError`: catching run-time failures must not catch
    a misconfiguration.
    """


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


class TooManyConnections(PresenceError):
    """A connection was refused: its user, or this server process, is at its limit.

    ``reason`` is ``user`` (``MAX_CONNECTIONS_PER_USER``, counted over every server) or
    ``process`` (``MAX_CONNECTIONS_PER_PROCESS``); ``limit`` is the limit reached.
    """

    def __init__(self, message: str, *, reason: str, limit: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.limit = limit
