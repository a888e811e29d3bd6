"""System checks. IDs are ``django_presence.E###`` / ``W###`` and never reused.

Every key of ``DJANGO_PRESENCE`` is validated by its spec in
:data:`django_presence.conf.SPECS`, the one the package applies when it reads the value
at run time; the spec names the ID below that reports a bad value.

========================  ==============================================================
ID                        Problem
========================  ==============================================================
django_presence.E001      ``STORE`` is ``"user"`` but the user model lacks the fields
                          ``ONLINE_FIELD`` (a ``BooleanField``) or ``LAST_SEEN_FIELD`` (a
                          ``DateTimeField`` with ``null=True``).
django_presence.E002      ``BACKEND`` cannot be imported or is not a backend class.
django_presence.E003      Removed in 0.1.0 (redis-py is a required dependency); never reused.
django_presence.E004      A time setting is not a number of seconds in its range.
django_presence.E005      ``JWT_ALGORITHMS`` is empty, not a list, or allows ``none``.
django_presence.E006      ``JWT_ALGORITHMS`` mixes HMAC and public-key algorithms.
django_presence.E007      A public-key algorithm is allowed but ``JWT_VERIFYING_KEY`` is unset.
django_presence.E008      ``DJANGO_PRESENCE`` is not a dict.
django_presence.E009      ``METRICS_HOOK`` cannot be imported or is not callable.
django_presence.E010      ``POLICY`` cannot be imported or is not a class.
django_presence.E011      A limit (frame size, rate, burst, flood, watched users, groups,
                          group members) is not a number in its range.
django_presence.E012      A switch (``SYNC_USER_MODEL``, ``DISCONNECT_ON_*``) is not a bool.
django_presence.E013      A name (``REDIS_URL``, ``KEY_PREFIX``, ``CHANNEL_LAYER``,
                          ``JWT_USER_ID_CLAIM``) is not a valid non-empty string.
django_presence.E014      ``BACKEND_OPTIONS`` is not a dict of keyword arguments, or they do
                          not fit the backend's constructor.
django_presence.E015      A JWT key, audience or issuer has the wrong type or is empty.
django_presence.E016      ``STORE`` is not ``"user"``, ``"table"`` or ``None``.
django_presence.E017      ``STORE`` and ``SYNC_USER_MODEL`` are both set and contradict
                          each other.
django_presence.W001      The in-memory backend is used with ``DEBUG = False``.
django_presence.W002      ``HEARTBEAT_INTERVAL`` is more than half of ``CONNECTION_TTL``.
django_presence.W003      The HMAC signing key is shorter than 32 bytes.
django_presence.W004      ``DJANGO_PRESENCE`` has a key the package does not know.
django_presence.W005      ``POLICY`` is :class:`~django_presence.policies.OpenPolicy` (or a
                          subclass) with ``DEBUG = False``: every user may watch, message
                          and find every other.
django_presence.W006      The user model took its ``Meta`` from a mixin listed before
                          ``AbstractUser``, losing ``AbstractUser``'s (verbose names).
django_presence.W007      A WebSocket route of ``ASGI_APPLICATION`` placed before the
                          package's ``ws/user/`` route matches its path and takes its
                          connections (a catch-all ``ws/<str:room>/`` listed first).
========================  ==============================================================
"""

from __future__ import annotations

import inspect
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import DEFAULTS, SETTING_NAME, SPECS, setting_key
from .exceptions import PresenceImproperlyConfigured

_HMAC = {"HS256", "HS384", "HS512"}


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """Check ``DJANGO_PRESENCE``: each key alone, then the keys that depend on each other."""
    user = getattr(settings, SETTING_NAME, {})
    if not isinstance(user, dict):
        return [
            Error(
                f"settings.{SETTING_NAME} must be a dict, got {type(user).__name__}: {user!r}.",
                id="django_presence.E008",
            )
        ]
    messages: list[CheckMessage] = [
        Warning(
            f"{SETTING_NAME}[{key!r}] is not a setting of django_presence.",
            hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            id="django_presence.W004",
        )
        for key in user
        if key not in DEFAULTS
    ]
    valid: dict[str, Any] = {}
    for name, spec in SPECS.items():
        value = user.get(name, DEFAULTS[name])
        try:
            valid[name] = spec.validate(name, value)
        except PresenceImproperlyConfigured as e:
            messages.append(Error(str(e), id=spec.check_id))
        except Exception as e:  # A check never raises, whatever an imported module does.
            messages.append(
                Error(
                    f"{setting_key(name)} = {value!r} raised {type(e).__name__}: {e}",
                    id=spec.check_id,
                )
            )
    messages += _check_backend(valid)
    messages += _check_times(valid)
    messages += _check_jwt(valid)
    messages += _check_policy(valid)
    messages += _check_store()
    return messages


def _check_store() -> list[CheckMessage]:
    from .store import contradiction

    reason = contradiction()
    if reason is None:
        return []
    return [
        Error(
            f"{setting_key('STORE')} and {setting_key('SYNC_USER_MODEL')} contradict each "
            f"other: {reason}.",
            hint="Set STORE alone (it succeeds SYNC_USER_MODEL); remove SYNC_USER_MODEL.",
            id="django_presence.E017",
        )
    ]


def _check_policy(valid: dict[str, Any]) -> list[CheckMessage]:
    from .policies import OpenPolicy

    policy = valid.get("POLICY")
    if settings.DEBUG or not (isinstance(policy, type) and issubclass(policy, OpenPolicy)):
        return []
    return [
        Warning(
            f"{setting_key('POLICY')} = {policy.__module__}.{policy.__qualname__} lets every "
            "user watch, message and find every other user, with DEBUG = False.",
            hint="Subclass django_presence.policies.DefaultPolicy and say who relates to "
            "whom in are_related(); see docs/security.md.",
            id="django_presence.W005",
        )
    ]


def _check_backend(valid: dict[str, Any]) -> list[CheckMessage]:
    backend_class = valid.get("BACKEND")
    if backend_class is None:
        return []  # Reported as E002.
    options = valid.get("BACKEND_OPTIONS")
    if options is not None:
        # What building the backend would raise as TypeError, found without building it.
        try:
            inspect.signature(backend_class).bind(**options)
        except TypeError as e:
            return [
                Error(
                    f"{setting_key('BACKEND_OPTIONS')} = {options!r} do not fit "
                    f"{backend_class.__module__}.{backend_class.__qualname__}: {e}.",
                    id="django_presence.E014",
                )
            ]
        except ValueError:
            pass  # No signature to read (a class built in C): left to run time.
    if backend_class.shared_across_processes or settings.DEBUG:
        return []
    return [
        Warning(
            f"{setting_key('BACKEND')} = {backend_class.__module__}."
            f"{backend_class.__qualname__} keeps presence in one process; with several server "
            "processes each sees only its own users.",
            hint="Use django_presence.backends.redis.RedisBackend in production.",
            id="django_presence.W001",
        )
    ]


def _check_times(valid: dict[str, Any]) -> list[CheckMessage]:
    ttl, interval = valid.get("CONNECTION_TTL"), valid.get("HEARTBEAT_INTERVAL")
    if ttl is None or interval is None or interval <= ttl / 2:
        return []
    return [
        Warning(
            f"{setting_key('HEARTBEAT_INTERVAL')} = {interval:g} is more than half of "
            f"CONNECTION_TTL = {ttl:g}: one late heartbeat makes live users flicker offline.",
            hint="Keep HEARTBEAT_INTERVAL at most CONNECTION_TTL / 2 (a third is safer).",
            id="django_presence.W002",
        )
    ]


def _check_jwt(valid: dict[str, Any]) -> list[CheckMessage]:
    algorithms = valid.get("JWT_ALGORITHMS")
    if algorithms is None:
        return []  # Reported as E005.
    hmac = {a for a in algorithms if a in _HMAC}
    if hmac and len(hmac) != len(set(algorithms)):
        return [
            Error(
                f"{setting_key('JWT_ALGORITHMS')} = {algorithms!r} mixes HMAC and public-key "
                "algorithms, which allows key-confusion attacks.",
                hint="Allow only HMAC algorithms or only public-key ones.",
                id="django_presence.E006",
            )
        ]
    if not hmac:
        if "JWT_VERIFYING_KEY" in valid and not valid["JWT_VERIFYING_KEY"]:
            return [
                Error(
                    f"{setting_key('JWT_ALGORITHMS')} = {algorithms!r} needs a public key in "
                    f"{setting_key('JWT_VERIFYING_KEY')}, which is not set.",
                    id="django_presence.E007",
                )
            ]
        return []
    if "JWT_SIGNING_KEY" not in valid:
        return []  # Reported as E015.
    key = valid["JWT_SIGNING_KEY"] or settings.SECRET_KEY
    if not isinstance(key, (str, bytes)):
        return []  # SECRET_KEY of another type: Django's own checks report it.
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
    """Check the user model: its presence fields when they hold the copy, and its Meta."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    messages = meta_warnings(user_model)
    if not isinstance(getattr(settings, SETTING_NAME, {}), dict):
        return messages  # Reported as E008 by check_settings; nothing else can be read.
    from .store import STORE_USER, store_kind, user_field_problems

    try:
        if store_kind() != STORE_USER:
            return messages
        problems = user_field_problems(user_model)
    except PresenceImproperlyConfigured:
        return messages  # A bad STORE or field name: reported by check_settings.
    if problems:
        messages.append(
            Error(
                f"{SETTING_NAME}['STORE'] is 'user', but the user model "
                f"{user_model._meta.label} {' and '.join(problems)}.",
                hint="Inherit django_presence.models.OnlineStatusMixin in your user model, "
                "name your own fields in ONLINE_FIELD and LAST_SEEN_FIELD, or set STORE "
                "to 'table' (the package's table) or None.",
                obj=user_model,
                id="django_presence.E001",
            )
        )
    return messages


def meta_warnings(user_model: type[Any]) -> list[CheckMessage]:
    """W006 when ``user_model`` inherited the Meta of a mixin instead of AbstractUser's.

    A model without a ``Meta`` of its own inherits the first one in its MRO: in
    ``User(SomeMixin, AbstractUser)`` an abstract mixin's (Django keeps an abstract
    model's ``Meta`` as a class attribute), and loses ``AbstractUser``'s verbose names.
    """
    from django.contrib.auth.models import AbstractUser

    if not issubclass(user_model, AbstractUser) or user_model is AbstractUser:
        return []
    mro = user_model.__mro__
    owner = next((base for base in mro[1:] if "Meta" in vars(base)), None)
    if owner is None or owner is AbstractUser or mro.index(owner) > mro.index(AbstractUser):
        return []
    lost = [
        name
        for name in ("verbose_name", "verbose_name_plural")
        if name in AbstractUser._meta.original_attrs
        and name not in user_model._meta.original_attrs
    ]
    if not lost:
        return []
    return [
        Warning(
            f"The user model {user_model._meta.label} takes its Meta from "
            f"{owner.__module__}.{owner.__qualname__}, listed before AbstractUser among its "
            f"bases, and so loses AbstractUser's Meta ({', '.join(lost)}).",
            hint="List AbstractUser first (class User(AbstractUser, Mixin)), or give the "
            "model a Meta of its own that subclasses AbstractUser.Meta.",
            obj=user_model,
            id="django_presence.W006",
        )
    ]


#: How deep :func:`_websocket_router` unwraps middleware before giving up.
_MAX_WRAPPERS = 32


def check_routes(**kwargs: Any) -> list[CheckMessage]:
    """W007: a WebSocket route listed before the package's ``ws/user/`` route swallows it.

    Reads the project's application from ``settings.ASGI_APPLICATION``, takes its
    ``websocket`` application (``ProtocolTypeRouter``), unwraps middleware (their
    ``inner`` or ``application`` attribute) down to the ``URLRouter``, and resolves the
    path of each of the package's routes the way ``URLRouter`` does: first match wins. A
    project without ``ASGI_APPLICATION``, or whose application cannot be imported or read,
    gets no message: the check cannot tell, and must never break ``manage.py check``.
    """
    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not isinstance(dotted, str) or not dotted:
        return []
    try:
        from django.utils.module_loading import import_string

        router = _websocket_router(import_string(dotted))
        if router is None:
            return []
        messages: list[CheckMessage] = []
        for path, route in _presence_routes(router, ""):
            taker = _resolve(router, path)
            if taker is None or taker is route:
                continue
            messages.append(
                Warning(
                    f"The WebSocket route {str(taker.pattern)!r} ({_describe(taker)}) of "
                    f"{dotted} comes before the package's route {path!r} and matches its "
                    f"path: {path!r} connections reach the wrong consumer, and the "
                    "presence.js client reconnects forever.",
                    hint=f"List the package's routes first: URLRouter([*presence_routes, "
                    f"...your routes]), or give {str(taker.pattern)!r} a path that "
                    f"does not match {path!r}. See docs/adopting.md.",
                    id="django_presence.W007",
                )
            )
        return messages
    except Exception:  # A project's ASGI module can do anything when imported.
        return []


def _unwrap(application: Any) -> Any:
    """``application`` without its middleware: a ``URLRouter``, or a leaf application."""
    from channels.routing import ProtocolTypeRouter, URLRouter

    for _ in range(_MAX_WRAPPERS):
        if isinstance(application, URLRouter):
            return application
        if isinstance(application, ProtocolTypeRouter):
            application = application.application_mapping.get("websocket")
        elif getattr(application, "inner", None) is not None:
            application = application.inner
        elif getattr(application, "application", None) is not None:
            application = application.application
        else:
            return application
    return None


def _websocket_router(application: Any) -> Any:
    from channels.routing import URLRouter

    router = _unwrap(application)
    return router if isinstance(router, URLRouter) else None


def _is_presence_route(route: Any) -> bool:
    from .consumers import UserConsumer

    consumer = getattr(route.callback, "consumer_class", None)
    return (isinstance(consumer, type) and issubclass(consumer, UserConsumer)) or (
        getattr(route, "name", None) == "django_presence_user"
    )


def _presence_routes(router: Any, prefix: str) -> list[tuple[str, Any]]:
    """The package's routes under ``router``, each with the path a client connects to.

    Only routes whose path (with the prefixes of nested routers) has no converter or
    regular expression can be named as one path; others are left out.
    """
    from channels.routing import URLRouter
    from django.urls.resolvers import RoutePattern

    found = []
    for route in router.routes:
        if not isinstance(route.pattern, RoutePattern) or "<" in str(route.pattern):
            continue
        path = prefix + str(route.pattern)
        inner = _unwrap(route.callback)
        if isinstance(inner, URLRouter):
            found += _presence_routes(inner, path)
        elif _is_presence_route(route):
            found.append((path, route))
    return found


def _resolve(router: Any, path: str) -> Any:
    """The leaf route ``router`` gives ``path`` to, as ``URLRouter`` would, or None."""
    from channels.routing import URLRouter

    for route in router.routes:
        match = route.pattern.match(path)
        if not match:
            continue
        inner = _unwrap(route.callback)
        if isinstance(inner, URLRouter):
            found = _resolve(inner, match[0])
            if found is not None:
                return found
            continue
        return route
    return None


def _describe(route: Any) -> str:
    consumer = getattr(route.callback, "consumer_class", None) or route.callback
    return f"{getattr(consumer, '__module__', '?')}.{getattr(consumer, '__qualname__', consumer)}"
