"""Settings for django_presence, read lazily from the ``DJANGO_PRESENCE`` dict.

Every attribute of :data:`presence_settings` is looked up in ``settings.DJANGO_PRESENCE``
when it is accessed, falling back to :data:`DEFAULTS`, so ``override_settings`` works in
tests. Nothing is read at import time.

:data:`SPECS` says what a valid value of each key is. The run-time accessors
(:func:`valid_setting`, :func:`number_setting`, :func:`import_setting`) and the system
checks (``django_presence.checks``) validate with the same specs, so a value that passes
``manage.py check`` is one the package accepts at run time.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

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
    # Write is_online/last_seen on the user model on every transition. Superseded by
    # STORE; False without STORE still means STORE = None.
    "SYNC_USER_MODEL": True,
    # Where transitions are written in the database: "user" (the user model's own fields,
    # named by ONLINE_FIELD and LAST_SEEN_FIELD), "table" (django_presence.models.
    # UserPresence, for the default auth.User) or None (nowhere).
    "STORE": "user",
    "ONLINE_FIELD": "is_online",
    "LAST_SEEN_FIELD": "last_seen",
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
    # Close all of a user's sockets (code 4011) when their account is deactivated
    # (is_active set to False) or deleted.
    "DISCONNECT_ON_DEACTIVATE": True,
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
    # Most open connections one user may hold, over every server, and one server process
    # may hold; a connection over either is closed with code 4009. None: no limit.
    "MAX_CONNECTIONS_PER_USER": 20,
    "MAX_CONNECTIONS_PER_PROCESS": 10000,
    # Groups with more members than this report a member count instead of the members
    # (Pusher's presence channels stop at 100 members).
    "GROUP_PRESENCE_MAX_MEMBERS": 100,
    # -- delivery (docs/delivery.md) --
    # Messages each stream (a user's, a client group's, the broadcasts) keeps for clients
    # that reconnect, and for how long; 0 keeps none (at-most-once delivery, as before 0.3).
    "HISTORY_SIZE": 300,
    "HISTORY_TTL": 86400,
    # How long a quiet stream's epoch and latest offset are remembered after its last
    # message: a client that saw that message then recovers with nothing to replay.
    "HISTORY_META_TTL": 604800,
    # Seconds after which a stored message to a user that no client of theirs acknowledged
    # is handed to the message_undelivered signal (once, by one process). None: never.
    "UNDELIVERED_AFTER": 30,
    # -- availability (docs/presence-states.md) --
    # Seconds without activity after which a user is "away"; 0: never away.
    "IDLE_AFTER": 300,
    # At most one last_active write per user per this many seconds (per server process),
    # whatever clients send; a user coming back from away is written at once.
    "ACTIVITY_WRITE_INTERVAL": 60,
    # Connection activities that keep their user from turning away (a call, a video
    # consultation): the user stays "online" while one of their connections has one.
    "KEEP_PRESENT_ACTIVITIES": ["in_call"],
    # A connection's presence data dict: its size as compact JSON, and its keys.
    "PRESENCE_DATA_MAX_BYTES": 1024,
    "PRESENCE_DATA_MAX_KEYS": 10,
    # Presence updates (set_presence) a connection may make per PRESENCE_UPDATE_PERIOD
    # seconds; more are merged and applied when allowed, never refused.
    "PRESENCE_UPDATE_RATE": 5,
    "PRESENCE_UPDATE_PERIOD": 30,
    # Longest status text, device and activity, in characters.
    "STATUS_TEXT_MAX_LENGTH": 100,
    "DEVICE_MAX_LENGTH": 32,
    "ACTIVITY_MAX_LENGTH": 64,
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
        #: What :func:`valid_setting` and :func:`number_setting` made of the current
        #: values, so that the hot path validates each setting once, not once per call.
        self._validated: dict[Any, Any] = {}

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
        self._validated.clear()


#: The settings object every module of the package reads from.
presence_settings = PresenceSettings()


def setting_key(name: str) -> str:
    """How messages name the key ``name``: ``DJANGO_PRESENCE['NAME']``."""
    return f"{SETTING_NAME}[{name!r}]"


def import_setting(
    name: str,
    value: Any,
    *,
    subclass_of: type | str | None = None,
    require_callable: bool = False,
) -> Any:
    """The object that the value ``value`` of the key ``name`` is, or names by dotted path.

    ``subclass_of`` (a class, or its dotted path, imported when needed) requires a class
    that subclasses it (``object``: any class); ``require_callable`` requires a callable.
    Raises :class:`~django_presence.exceptions.PresenceImproperlyConfigured`, naming
    ``DJANGO_PRESENCE[name]`` and the value, when the path cannot be imported (the
    ``ImportError`` is chained) or the object is not what is required.
    """
    base = import_string(subclass_of) if isinstance(subclass_of, str) else subclass_of
    expected = _describe_object(subclass_of, require_callable)

    def fits(obj: Any) -> bool:
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            return False
        return callable(obj) or not require_callable

    if not isinstance(value, str):
        if not fits(value):
            raise PresenceImproperlyConfigured(
                f"{setting_key(name)} must be {expected} or its dotted path, got {value!r}."
            )
        return value
    try:
        obj = import_string(value)
    except ImportError as e:
        raise PresenceImproperlyConfigured(
            f"{setting_key(name)} = {value!r} could not be imported: {e}"
        ) from e
    if not fits(obj):
        raise PresenceImproperlyConfigured(
            f"{setting_key(name)} = {value!r} must name {expected}, got {obj!r}."
        )
    return obj


def _describe_object(subclass_of: type | str | None, require_callable: bool) -> str:
    if subclass_of is object:
        return "a class"
    if isinstance(subclass_of, type):
        return f"a subclass of {subclass_of.__module__}.{subclass_of.__qualname__}"
    if subclass_of is not None:
        return f"a subclass of {subclass_of}"
    return "a callable" if require_callable else "an object"


@dataclass(frozen=True)
class Spec:
    """What a valid value of one ``DJANGO_PRESENCE`` key is (the base of the kinds below).

    ``check_id`` is the system check that reports a value the spec rejects.
    """

    check_id: str

    @property
    def expected(self) -> str:
        """The valid values, in words; messages and ``docs/settings.md`` use it."""
        raise NotImplementedError(f"{type(self).__name__} must define expected")

    def validate(self, name: str, value: Any) -> Any:
        """``value`` as the package uses it, or raise ``PresenceImproperlyConfigured``."""
        raise NotImplementedError(f"{type(self).__name__} must implement validate()")

    def error(self, name: str, value: Any) -> PresenceImproperlyConfigured:
        """The error for the bad ``value`` of ``name``: the key, the rule, the value."""
        return PresenceImproperlyConfigured(
            f"{setting_key(name)} must be {self.expected}, got {value!r}."
        )


@dataclass(frozen=True)
class Number(Spec):
    """A number (never a bool) above ``minimum`` (``strict``) or at least ``minimum``.

    ``integer``: an int only; ``optional``: None too (the feature is off);
    ``timedelta``: a ``datetime.timedelta`` too. Validated as a float (an int if
    ``integer``), a timedelta as its seconds.
    """

    unit: str = ""
    minimum: float = 0
    strict: bool = False
    integer: bool = False
    optional: bool = False
    timedelta: bool = False

    @property
    def expected(self) -> str:
        text = "an integer" if self.integer else "a number"
        text += f" of {self.unit}" if self.unit else ""
        text += f" {'>' if self.strict else '>='} {self.minimum:g}"
        if self.timedelta:
            text += ", or such a timedelta"
        return text + (", or None" if self.optional else "")

    def admits(self, number: float) -> bool:
        """Whether ``number`` is within the bound (NaN never is)."""
        return number > self.minimum if self.strict else number >= self.minimum

    def validate(self, name: str, value: Any) -> float | None:
        if value is None and self.optional:
            return None
        if self.timedelta and isinstance(value, datetime.timedelta):
            number: float = value.total_seconds()
        elif isinstance(value, bool) or not isinstance(
            value, int if self.integer else (int, float)
        ):
            raise self.error(name, value)
        else:
            number = value
        if not self.admits(number):
            raise self.error(name, value)
        return number if self.integer else float(number)


@dataclass(frozen=True)
class Flag(Spec):
    """True or False, nothing merely truthy: ``"False"`` would read as on."""

    @property
    def expected(self) -> str:
        return "True or False"

    def validate(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(name, value)
        return value


@dataclass(frozen=True)
class Text(Spec):
    """A non-empty string, without any of the characters in ``forbidden``."""

    forbidden: str = ""

    @property
    def expected(self) -> str:
        without = " or ".join(repr(c) for c in self.forbidden)
        return "a non-empty string" + (f" without {without}" if without else "")

    def validate(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value or any(c in value for c in self.forbidden):
            raise self.error(name, value)
        return value


@dataclass(frozen=True)
class Names(Spec):
    """A non-empty string or a non-empty list of them, or None (a JWT claim not checked)."""

    @property
    def expected(self) -> str:
        return "a non-empty string, a non-empty list of them, or None"

    def validate(self, name: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value):
            return value
        if (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, str) and v for v in value)
        ):
            return value
        raise self.error(name, value)


@dataclass(frozen=True)
class Strings(Spec):
    """A list or tuple of non-empty strings (possibly empty), returned as a frozenset."""

    @property
    def expected(self) -> str:
        return "a list of non-empty strings"

    def validate(self, name: str, value: Any) -> frozenset[str]:
        if not isinstance(value, (list, tuple, set, frozenset)) or not all(
            isinstance(v, str) and v for v in value
        ):
            raise self.error(name, value)
        return frozenset(value)


@dataclass(frozen=True)
class Key(Spec):
    """A JWT key: a non-empty str or bytes, or None; ``objects``: a key object too.

    PyJWT verifies with cryptography's public key objects and ``jwt.PyJWK`` as well as
    PEM text, and their classes depend on what is installed, so a key object is told
    apart by what it is not: a number, a bool or a container.
    """

    objects: bool = False

    @property
    def expected(self) -> str:
        if self.objects:
            return "a non-empty str or bytes PEM key, a key object, or None"
        return "a non-empty str or bytes secret, or None"

    def validate(self, name: str, value: Any) -> Any:
        if value is None or (isinstance(value, (str, bytes)) and value):
            return value
        if self.objects and not isinstance(
            value, (str, bytes, bool, int, float, list, tuple, dict, set, frozenset)
        ):
            return value
        raise self.error(name, value)


@dataclass(frozen=True)
class Algorithms(Spec):
    """A non-empty list (or tuple) of JWT algorithm names, none of them ``none``."""

    @property
    def expected(self) -> str:
        return "a non-empty list of algorithm names other than 'none'"

    def validate(self, name: str, value: Any) -> list[str]:
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(a, str) and a and a.lower() != "none" for a in value)
        ):
            raise self.error(name, value)
        return list(value)


@dataclass(frozen=True)
class Options(Spec):
    """Keyword arguments: a dict with string keys, or None for none."""

    @property
    def expected(self) -> str:
        return "a dict of keyword arguments (string keys), or None"

    def validate(self, name: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.error(name, value)
        return value


@dataclass(frozen=True)
class Import(Spec):
    """An object or its dotted path, loaded by :func:`import_setting` with these rules."""

    subclass_of: type | str | None = None
    require_callable: bool = False
    optional: bool = False

    @property
    def expected(self) -> str:
        text = _describe_object(self.subclass_of, self.require_callable)
        return f"{text} or its dotted path" + (", or None" if self.optional else "")

    def validate(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        return import_setting(
            name, value, subclass_of=self.subclass_of, require_callable=self.require_callable
        )


@dataclass(frozen=True)
class Choice(Spec):
    """One of ``choices`` (compared with ``==``, so ``None`` may be one of them)."""

    choices: tuple[Any, ...] = ()

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def validate(self, name: str, value: Any) -> Any:
        if isinstance(value, bool) or value not in self.choices:
            raise self.error(name, value)
        return value


_SECONDS_POSITIVE = Number("django_presence.E004", unit="seconds", strict=True)
_SECONDS = Number("django_presence.E004", unit="seconds")
_LIMIT = "django_presence.E011"

#: What a valid value of each key of :data:`DEFAULTS` is, and which check reports it.
SPECS: dict[str, Spec] = {
    # The class is named by path: conf must not import the backends, which import conf.
    "BACKEND": Import(
        "django_presence.E002", subclass_of="django_presence.backends.base.BasePresenceBackend"
    ),
    "BACKEND_OPTIONS": Options("django_presence.E014"),
    "REDIS_URL": Text("django_presence.E013"),
    # The prefix is a Redis Cluster hash tag, {prefix}; a brace would end it early.
    "KEY_PREFIX": Text("django_presence.E013", forbidden="{}"),
    "CONNECTION_TTL": _SECONDS_POSITIVE,
    "HEARTBEAT_INTERVAL": _SECONDS_POSITIVE,
    "OFFLINE_GRACE_PERIOD": _SECONDS,
    "SYNC_USER_MODEL": Flag("django_presence.E012"),
    "STORE": Choice("django_presence.E016", choices=("user", "table", None)),
    # A field name: no lookup separator, no dot.
    "ONLINE_FIELD": Text("django_presence.E013", forbidden=". "),
    "LAST_SEEN_FIELD": Text("django_presence.E013", forbidden=". "),
    "TRANSITION_BATCH_WINDOW": _SECONDS,
    "CHANNEL_LAYER": Text("django_presence.E013"),
    "JWT_ALGORITHMS": Algorithms("django_presence.E005"),
    "JWT_SIGNING_KEY": Key("django_presence.E015"),
    "JWT_VERIFYING_KEY": Key("django_presence.E015", objects=True),
    "JWT_USER_ID_CLAIM": Text("django_presence.E013"),
    "JWT_AUDIENCE": Names("django_presence.E015"),
    "JWT_ISSUER": Names("django_presence.E015"),
    # PyJWT takes a timedelta as well as seconds.
    "JWT_LEEWAY": Number("django_presence.E004", unit="seconds", timedelta=True),
    "DISCONNECT_ON_LOGOUT": Flag("django_presence.E012"),
    "DISCONNECT_ON_PASSWORD_CHANGE": Flag("django_presence.E012"),
    "DISCONNECT_ON_DEACTIVATE": Flag("django_presence.E012"),
    "POLICY": Import("django_presence.E010", subclass_of=object),
    "MAX_FRAME_SIZE": Number(_LIMIT, unit="bytes", minimum=1),
    "RATE_LIMIT_RATE": Number(_LIMIT, unit="frames a second", strict=True, optional=True),
    "RATE_LIMIT_BURST": Number(_LIMIT, unit="frames", minimum=1),
    "USER_RATE_LIMIT_RATE": Number(_LIMIT, unit="frames a second", strict=True, optional=True),
    "USER_RATE_LIMIT_BURST": Number(_LIMIT, unit="frames", minimum=1),
    "FLOOD_CLOSE_AFTER": Number(_LIMIT, minimum=1, integer=True, optional=True),
    "FLOOD_WINDOW": _SECONDS_POSITIVE,
    "MAX_WATCHED_USERS": Number(_LIMIT, unit="users"),
    "MAX_GROUPS": Number(_LIMIT, unit="groups"),
    "MAX_CONNECTIONS_PER_USER": Number(
        _LIMIT, unit="connections", minimum=1, integer=True, optional=True
    ),
    "MAX_CONNECTIONS_PER_PROCESS": Number(
        _LIMIT, unit="connections", minimum=1, integer=True, optional=True
    ),
    "GROUP_PRESENCE_MAX_MEMBERS": Number(_LIMIT, unit="members"),
    "HISTORY_SIZE": Number(_LIMIT, unit="messages", integer=True),
    "HISTORY_TTL": _SECONDS_POSITIVE,
    "HISTORY_META_TTL": _SECONDS_POSITIVE,
    "UNDELIVERED_AFTER": Number(_LIMIT, unit="seconds", strict=True, optional=True),
    "IDLE_AFTER": _SECONDS,
    "ACTIVITY_WRITE_INTERVAL": _SECONDS,
    "KEEP_PRESENT_ACTIVITIES": Strings("django_presence.E013"),
    "PRESENCE_DATA_MAX_BYTES": Number(_LIMIT, integer=True),
    "PRESENCE_DATA_MAX_KEYS": Number(_LIMIT, integer=True),
    "PRESENCE_UPDATE_RATE": Number(_LIMIT, minimum=1, integer=True),
    "PRESENCE_UPDATE_PERIOD": _SECONDS_POSITIVE,
    "STATUS_TEXT_MAX_LENGTH": Number(_LIMIT, integer=True),
    "DEVICE_MAX_LENGTH": Number(_LIMIT, minimum=1, integer=True),
    "ACTIVITY_MAX_LENGTH": Number(_LIMIT, minimum=1, integer=True),
    "METRICS_HOOK": Import("django_presence.E009", require_callable=True, optional=True),
}

_CURRENT: Any = object()


def valid_setting(name: str, value: Any = _CURRENT) -> Any:
    """The current value of ``name`` (or ``value``), validated by its spec in :data:`SPECS`.

    Returns what the spec makes of it (the class a dotted path names, a float...); raises
    :class:`~django_presence.exceptions.PresenceImproperlyConfigured` for a bad value.
    """
    if value is not _CURRENT:
        return SPECS[name].validate(name, value)
    validated = presence_settings._validated
    try:
        return validated[name]
    except KeyError:
        pass
    # A bad value raises each time, and is not cached.
    result = validated[name] = SPECS[name].validate(name, getattr(presence_settings, name))
    return result


def number_setting(name: str, *, minimum: float = 0, allow_zero: bool = True) -> float:
    """The numeric setting ``name`` as a float, validated by its spec in :data:`SPECS`.

    ``minimum`` and ``allow_zero`` state what the caller relies on. The spec, which
    ``manage.py check`` applies too, must guarantee it: a caller asking for more is a bug
    in the package, reported as ``TypeError`` whatever the value.
    """
    key = (name, minimum, allow_zero)
    validated = presence_settings._validated
    try:
        return cast(float, validated[key])
    except KeyError:
        pass
    spec = SPECS[name]
    if (
        not isinstance(spec, Number)
        or spec.optional
        or spec.minimum < minimum
        or (not allow_zero and spec.admits(0))
    ):
        raise TypeError(
            f"number_setting({name!r}, minimum={minimum!r}, allow_zero={allow_zero!r}) relies "
            f"on more than SPECS[{name!r}] checks ({spec.expected}); make the spec stricter."
        )
    # Not None: optional specs were refused above.
    result = validated[key] = float(
        cast(float, spec.validate(name, getattr(presence_settings, name)))
    )
    return result


@receiver(setting_changed)
def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    # The cache holds DJANGO_PRESENCE's values only: SECRET_KEY (the default JWT key) is
    # read at each verification and AUTH_USER_MODEL where it is used. The backends drop
    # their own cache (django_presence.backends).
    if setting == SETTING_NAME:
        presence_settings.reload()
