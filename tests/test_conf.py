"""``presence_settings``: read lazily, follow override_settings, reset the backend."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_presence.backends import get_backend, load_backend
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend
from django_presence.conf import DEFAULTS, number_setting, presence_settings
from django_presence.exceptions import (
    BackendUnavailable,
    InvalidToken,
    PresenceError,
    PresenceImproperlyConfigured,
    PresenceImproperlyInstalled,
)


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
    ("value", "kwargs", "message"),
    [
        ("60", {}, "must be a number of seconds, got '60'"),
        (True, {}, "must be a number of seconds, got True"),
        (None, {}, "must be a number of seconds, got None"),
        (-1, {}, "must be >= 0, got -1"),
        (0, {"allow_zero": False}, "must be > 0, got 0"),
    ],
)
def test_number_setting_errors(value: Any, kwargs: dict[str, Any], message: str) -> None:
    with (
        override_settings(DJANGO_PRESENCE={"CONNECTION_TTL": value}),
        pytest.raises(PresenceImproperlyConfigured, match=r"\['CONNECTION_TTL'\] " + message),
    ):
        number_setting("CONNECTION_TTL", **kwargs)


def test_number_setting() -> None:
    with override_settings(DJANGO_PRESENCE={"CONNECTION_TTL": 3, "OFFLINE_GRACE_PERIOD": 0}):
        assert number_setting("CONNECTION_TTL", allow_zero=False) == 3.0
        assert number_setting("OFFLINE_GRACE_PERIOD") == 0.0


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

    with override_settings(TIME_ZONE="Europe/Paris"):  # Unrelated: the backend stays.
        assert get_backend() is third


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
    assert backend._client_options == {
        "socket_timeout": 1.5,
        "socket_connect_timeout": 0.5,
        "max_connections": 7,
        "pool_timeout": 3,
    }


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        ("no.such.Backend", {}, "could not be imported"),
        ("django_presence.conf.PresenceSettings", {}, "is not a subclass"),
        (None, {}, "must be the dotted path of a backend class, got None"),
        ("django_presence.backends.memory.MemoryBackend", {"url": "x"}, "do not fit"),
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
        "django_presence.heartbeat",
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
