"""``presence_settings``: read lazily, follow override_settings, reset the backend."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import django_presence
from django_presence.backends import get_backend, load_backend
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend
from django_presence.conf import (
    DEFAULTS,
    SPECS,
    import_setting,
    number_setting,
    presence_settings,
    valid_setting,
)
from django_presence.exceptions import (
    BackendUnavailable,
    InvalidToken,
    PresenceError,
    PresenceImproperlyConfigured,
    PresenceImproperlyInstalled,
)
from django_presence.policies import DefaultPolicy


def test_values_come_from_the_setting_then_the_defaults() -> None:
    assert settings.DJANGO_PRESENCE["CONNECTION_TTL"] == presence_settings.CONNECTION_TTL
    assert "KEY_PREFIX" not in settings.DJANGO_PRESENCE
    assert presence_settings.KEY_PREFIX == DEFAULTS["KEY_PREFIX"] == "presence"


def test_override_settings_is_seen_at_once() -> None:
    before = presence_settings.CONNECTION_TTL
    with override_settings(DJANGO_PRESENCE={"CONNECTION_TTL": 7}):
        assert presence_settings.CONNECTION_TTL == 7
        assert DEFAULTS["HEARTBEAT_INTERVAL"] == presence_settings.HEARTBEAT_INTERVAL
    assert before == presence_settings.CONNECTION_TTL


def test_no_setting_at_all_means_the_defaults() -> None:
    with override_settings():
        del settings.DJANGO_PRESENCE
        presence_settings.reload()  # Deleting a setting sends no setting_changed.
        assert DEFAULTS["CONNECTION_TTL"] == presence_settings.CONNECTION_TTL
    presence_settings.reload()


@pytest.mark.parametrize("name", ["NOT_A_SETTING", "connection_ttl", "_cache_x", "__wrapped__"])
def test_unknown_keys_are_attribute_errors(name: str) -> None:
    with pytest.raises(AttributeError, match="Unknown DJANGO_PRESENCE setting"):
        getattr(presence_settings, name)


def test_a_setting_that_is_not_a_dict() -> None:
    with (
        override_settings(DJANGO_PRESENCE=["BACKEND"]),
        pytest.raises(
            PresenceImproperlyConfigured, match=r"must be a dict, got list: \['BACKEND'\]"
        ),
    ):
        presence_settings.BACKEND  # noqa: B018


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CONNECTION_TTL", "60", "must be a number of seconds > 0, got '60'."),
        ("CONNECTION_TTL", True, "must be a number of seconds > 0, got True."),
        ("CONNECTION_TTL", None, "must be a number of seconds > 0, got None."),
        ("CONNECTION_TTL", 0, "must be a number of seconds > 0, got 0."),
        ("CONNECTION_TTL", float("nan"), "must be a number of seconds > 0, got nan."),
        ("OFFLINE_GRACE_PERIOD", -1, "must be a number of seconds >= 0, got -1."),
        ("MAX_FRAME_SIZE", 0.5, "must be a number of bytes >= 1, got 0.5."),
    ],
)
def test_number_setting_errors(name: str, value: Any, message: str) -> None:
    with (
        override_settings(DJANGO_PRESENCE={name: value}),
        pytest.raises(PresenceImproperlyConfigured) as info,
    ):
        number_setting(name)
    assert str(info.value) == f"DJANGO_PRESENCE[{name!r}] {message}"


def test_number_setting() -> None:
    with override_settings(DJANGO_PRESENCE={"CONNECTION_TTL": 3, "OFFLINE_GRACE_PERIOD": 0}):
        assert number_setting("CONNECTION_TTL", allow_zero=False) == 3.0
        assert number_setting("OFFLINE_GRACE_PERIOD") == 0.0


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("OFFLINE_GRACE_PERIOD", {"allow_zero": False}),  # the spec allows 0
        ("MAX_GROUPS", {"minimum": 1}),  # the spec allows 0
        ("RATE_LIMIT_RATE", {}),  # may be None
        ("SYNC_USER_MODEL", {}),  # not a number
    ],
)
def test_number_setting_refuses_callers_relying_on_more_than_the_spec(
    name: str, kwargs: dict[str, Any]
) -> None:
    # manage.py check applies the spec only: a caller's stricter bound would fail at run
    # time for a value that passed the checks.
    with pytest.raises(TypeError, match="make the spec stricter"):
        number_setting(name, **kwargs)


def _number_setting_calls() -> list[tuple[str, dict[str, Any], str]]:
    calls = []
    for path in sorted(Path(django_presence.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "number_setting"
                and isinstance(node.args[0], ast.Constant)
            ):
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
                calls.append((node.args[0].value, kwargs, f"{path.name}:{node.lineno}"))
    return calls


def test_every_number_setting_call_of_the_package_fits_its_spec() -> None:
    calls = _number_setting_calls()
    assert len(calls) > 10
    for name, kwargs, where in calls:
        assert isinstance(number_setting(name, **kwargs), float), where


def test_every_setting_has_a_spec_that_accepts_its_default() -> None:
    assert list(SPECS) == list(DEFAULTS)
    for name, default in DEFAULTS.items():
        valid_setting(name, default)


def test_the_settings_page_shows_the_valid_values_of_the_specs() -> None:
    page = (Path(__file__).parent.parent / "docs" / "settings.md").read_text()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", page, re.M)
    assert dict(rows) == {name: spec.expected for name, spec in SPECS.items()}


def test_import_setting() -> None:
    assert import_setting("POLICY", DefaultPolicy, subclass_of=object) is DefaultPolicy
    path = "django_presence.policies.DefaultPolicy"
    assert import_setting("POLICY", path, subclass_of=object) is DefaultPolicy
    base = "django_presence.policies.DefaultPolicy"
    assert import_setting("POLICY", DefaultPolicy, subclass_of=base) is DefaultPolicy
    assert import_setting("METRICS_HOOK", "builtins.print", require_callable=True) is print


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("no.such.Thing", {}, "DJANGO_PRESENCE['X'] = 'no.such.Thing' could not be imported: "),
        (3, {"require_callable": True}, "DJANGO_PRESENCE['X'] must be a callable or its "),
        ("os.sep", {"require_callable": True}, "DJANGO_PRESENCE['X'] = 'os.sep' must name a "),
        (int, {"subclass_of": str}, "DJANGO_PRESENCE['X'] must be a subclass of builtins.str "),
        ("os.path", {"subclass_of": object}, "DJANGO_PRESENCE['X'] = 'os.path' must name a class"),
    ],
)
def test_import_setting_errors(value: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PresenceImproperlyConfigured) as info:
        import_setting("X", value, **kwargs)
    assert str(info.value).startswith(message)
    if isinstance(value, str) and "could not be imported" in message:
        assert isinstance(info.value.__cause__, ImportError)


def test_setting_changed_resets_the_backend(redis_url: str) -> None:
    first = get_backend()
    assert get_backend() is first
    assert isinstance(first, MemoryBackend)

    redis_settings = {
        "BACKEND": "django_presence.backends.redis.RedisBackend",
        "REDIS_URL": redis_url,
        "KEY_PREFIX": "conf-test",
    }
    with override_settings(DJANGO_PRESENCE=redis_settings):
        second = get_backend()
        assert isinstance(second, RedisBackend)
        assert (second.url, second.key_prefix) == (redis_url, "conf-test")
        with override_settings(CHANNEL_LAYERS={}):
            assert get_backend() is not second
    third = get_backend()
    assert isinstance(third, MemoryBackend)
    assert third is not first

    with override_settings(AUTH_USER_MODEL="auth.User"):  # Other users: a new backend.
        assert get_backend() is not third
    fourth = get_backend()
    with override_settings(TIME_ZONE="Europe/Paris"):  # Unrelated: the backend stays.
        assert get_backend() is fourth


def test_conf_does_not_import_the_backends() -> None:
    """No import cycle: the backends import conf, never the other way round."""
    code = (
        "import sys, django_presence.conf\n"
        "assert 'django_presence.backends' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_backend_options_reach_the_backend(redis_url: str) -> None:
    options = {
        "url": redis_url,
        "key_prefix": "opts",
        "socket_timeout": 1.5,
        "socket_connect_timeout": 0.5,
        "max_connections": 7,
        "pool_timeout": 3,
    }
    with override_settings(
        DJANGO_PRESENCE={
            "BACKEND": "django_presence.backends.redis.RedisBackend",
            "BACKEND_OPTIONS": options,
        }
    ):
        backend = get_backend()
    assert isinstance(backend, RedisBackend)
    assert backend.key_prefix == "opts"
    # What the blocking client was built with (redis-py's public pool attributes).
    pool = backend.sync_client().connection_pool
    assert (pool.max_connections, pool.timeout) == (7, 3)
    assert pool.connection_kwargs["socket_timeout"] == 1.5
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.5
    backend.sync_client().close()


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        ("no.such.Backend", {}, "could not be imported"),
        ("django_presence.conf.PresenceSettings", {}, "must name a subclass of django_presence"),
        (None, {}, "must be a subclass of .* or its dotted path, got None"),
        ("django_presence.backends.memory.MemoryBackend", {"url": "x"}, "do not fit"),
        ("django_presence.backends.memory.MemoryBackend", ["x"], "BACKEND_OPTIONS'. must be"),
    ],
)
def test_load_backend_errors(path: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(PresenceImproperlyConfigured, match=message):
        load_backend(path, options)


def test_nothing_reads_settings_at_import_time() -> None:
    """Importing the modules needs no configured settings (no DJANGO_SETTINGS_MODULE)."""
    modules = [
        "django_presence",
        "django_presence.conf",
        "django_presence.backends",
        "django_presence.backends.base",
        "django_presence.backends.memory",
        "django_presence.backends.redis",
        "django_presence.runtime",
        "django_presence.transitions",
        "django_presence.protocol",
        "django_presence.ids",
        "django_presence.checks",
        "django_presence.exceptions",
        "django_presence.signals",
    ]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "from django.conf import settings\nassert not settings.configured\n"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_configuration_errors_are_not_run_time_errors() -> None:
    """``except PresenceError`` must never swallow a misconfiguration (anymail's rule)."""
    assert issubclass(PresenceImproperlyConfigured, ImproperlyConfigured)
    assert not issubclass(PresenceImproperlyConfigured, PresenceError)
    assert issubclass(PresenceImproperlyInstalled, PresenceImproperlyConfigured)
    assert issubclass(PresenceImproperlyInstalled, ImportError)
    assert not issubclass(PresenceImproperlyInstalled, PresenceError)
    assert issubclass(BackendUnavailable, PresenceError)
    assert issubclass(InvalidToken, PresenceError)


def test_validated_settings_and_database_copy_follow_override_settings() -> None:
    """The hot path validates each setting once; a settings change is seen at once."""
    from django_presence.conf import number_setting, valid_setting
    from django_presence.store import STORE_TABLE, STORE_USER, database_copy

    base = dict(settings.DJANGO_PRESENCE)
    with override_settings(DJANGO_PRESENCE={**base, "CONNECTION_TTL": 7, "STORE": "user"}):
        assert number_setting("CONNECTION_TTL", allow_zero=False) == 7.0
        assert number_setting("CONNECTION_TTL", allow_zero=False) == 7.0
        assert valid_setting("STORE") == STORE_USER
        copy = database_copy()
        assert copy is not None
        assert copy.kind == STORE_USER
        assert database_copy() is copy
    with override_settings(DJANGO_PRESENCE={**base, "CONNECTION_TTL": 9, "STORE": "table"}):
        assert number_setting("CONNECTION_TTL", allow_zero=False) == 9.0
        assert valid_setting("STORE") == STORE_TABLE
        copy = database_copy()
        assert copy is not None
        assert copy.kind == STORE_TABLE
    with override_settings(DJANGO_PRESENCE={**base, "CONNECTION_TTL": -1}):
        for _ in range(2):  # a bad value raises each time, never cached
            with pytest.raises(ImproperlyConfigured):
                number_setting("CONNECTION_TTL", allow_zero=False)
