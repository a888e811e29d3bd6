"""System checks: each ID fires for its problem, alone, and a good configuration is clean."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core import checks
from django.test import override_settings

import django_presence.checks

REDIS = "django_presence.backends.redis.RedisBackend"
#: IDs of removed checks: documented as removed, never used again.
RETIRED = {"django_presence.E003"}


@pytest.fixture(autouse=True)
def _debug() -> Any:
    """Development settings, as ``runserver`` sees them (pytest-django turns DEBUG off)."""
    with override_settings(DEBUG=True):
        yield


def presence_ids(**presence: Any) -> list[str]:
    """IDs of the django_presence messages of all checks, with DJANGO_PRESENCE updated."""
    with override_settings(DJANGO_PRESENCE={**settings.DJANGO_PRESENCE, **presence}):
        return ids()


def ids() -> list[str]:
    return sorted(m.id for m in checks.run_checks() if (m.id or "").startswith("django_presence."))


def test_a_good_configuration_is_clean() -> None:
    assert ids() == []
    assert presence_ids(BACKEND=REDIS, REDIS_URL="redis://127.0.0.1:1/0") == []
    assert presence_ids(JWT_ALGORITHMS=["RS256", "ES256"], JWT_VERIFYING_KEY="pem") == []
    assert presence_ids(SYNC_USER_MODEL=False, OFFLINE_GRACE_PERIOD=0) == []


def test_e001_user_model_without_the_mixin() -> None:
    # Django's own model checks cannot run with AUTH_USER_MODEL swapped at runtime, so the
    # model-tagged check of the package is called directly.
    from django_presence.checks import check_user_model

    with override_settings(AUTH_USER_MODEL="auth.User"):
        [message] = check_user_model()
        assert message.id == "django_presence.E001"
        assert "auth.User" in message.msg
        with override_settings(DJANGO_PRESENCE={"SYNC_USER_MODEL": False}):
            assert check_user_model() == []
    assert check_user_model() == []


@pytest.mark.parametrize(
    "backend",
    ["no.such.Backend", "nodots", "django_presence.conf.PresenceSettings", "os.path", None, 3],
)
def test_e002_backend_is_not_a_backend(backend: Any) -> None:
    assert presence_ids(BACKEND=backend) == ["django_presence.E002"]


@pytest.mark.parametrize(
    "times",
    [
        {"CONNECTION_TTL": 0},
        {"CONNECTION_TTL": -5},
        {"CONNECTION_TTL": "60"},
        {"CONNECTION_TTL": None},
        {"HEARTBEAT_INTERVAL": 0},
        {"HEARTBEAT_INTERVAL": True},
        {"OFFLINE_GRACE_PERIOD": -1},
    ],
)
def test_e004_time_settings(times: dict[str, Any]) -> None:
    assert presence_ids(**times) == ["django_presence.E004"]


def test_e004_once_per_bad_setting() -> None:
    assert presence_ids(CONNECTION_TTL=0, HEARTBEAT_INTERVAL="x") == ["django_presence.E004"] * 2


@pytest.mark.parametrize(
    "algorithms", [[], "HS256", ["none"], ["HS256", "NONE"], [""], ["HS256", None], None]
)
def test_e005_jwt_algorithms(algorithms: Any) -> None:
    assert presence_ids(JWT_ALGORITHMS=algorithms) == ["django_presence.E005"]


def test_e006_hmac_mixed_with_public_key_algorithms() -> None:
    assert presence_ids(JWT_ALGORITHMS=["HS256", "RS256"], JWT_VERIFYING_KEY="pem") == [
        "django_presence.E006"
    ]


def test_e007_public_key_algorithm_without_verifying_key() -> None:
    assert presence_ids(JWT_ALGORITHMS=["RS256"]) == ["django_presence.E007"]


@pytest.mark.parametrize("value", [["BACKEND"], "x", None])
def test_e008_settings_not_a_dict(value: Any) -> None:
    with override_settings(DJANGO_PRESENCE=value):
        assert ids() == ["django_presence.E008"]


@pytest.mark.parametrize("hook", ["no.such.hook", "nodots", 3, "django_presence.conf.DEFAULTS"])
def test_e009_metrics_hook_unusable(hook: Any) -> None:
    assert presence_ids(METRICS_HOOK=hook) == ["django_presence.E009"]


def test_e009_not_raised_for_a_usable_hook() -> None:
    assert presence_ids(METRICS_HOOK="django_presence.metrics.reset") == []
    assert presence_ids(METRICS_HOOK=lambda name, value, labels: None) == []


@override_settings(DEBUG=False)
def test_w001_memory_backend_in_production() -> None:
    assert ids() == ["django_presence.W001"]
    assert presence_ids(BACKEND=REDIS) == []


def test_w002_heartbeat_too_close_to_ttl() -> None:
    assert presence_ids(CONNECTION_TTL=30, HEARTBEAT_INTERVAL=16) == ["django_presence.W002"]
    assert presence_ids(CONNECTION_TTL=30, HEARTBEAT_INTERVAL=15) == []


def test_w003_short_signing_key() -> None:
    assert presence_ids(JWT_SIGNING_KEY="short") == ["django_presence.W003"]
    assert presence_ids(JWT_SIGNING_KEY=b"x" * 32) == []
    with override_settings(SECRET_KEY="short-secret"):
        assert ids() == ["django_presence.W003"]


def test_a_signing_key_of_the_wrong_type_does_not_crash_the_checks() -> None:
    assert presence_ids(JWT_SIGNING_KEY=12345) == []


def test_w004_unknown_key() -> None:
    assert presence_ids(CONECTION_TTL=60, OTHER=1) == ["django_presence.W004"] * 2


def test_messages_name_the_setting_and_value() -> None:
    with override_settings(DJANGO_PRESENCE={**settings.DJANGO_PRESENCE, "CONNECTION_TTL": -5}):
        [message] = [m for m in checks.run_checks() if m.id == "django_presence.E004"]
    assert "DJANGO_PRESENCE['CONNECTION_TTL']" in message.msg
    assert "-5" in message.msg


def test_every_id_is_documented_once_and_used() -> None:
    source = Path(django_presence.checks.__file__).read_text()
    docstring = django_presence.checks.__doc__ or ""
    body = source.split('"""', 2)[2]
    documented = re.findall(r"django_presence\.[EW]\d{3}", docstring)
    used = set(re.findall(r'id="(django_presence\.[EW]\d{3})"', body))

    assert len(documented) == len(set(documented))
    assert set(documented) == used | RETIRED
    assert not used & RETIRED
    expected = {f"django_presence.E00{i}" for i in range(1, 10)} - RETIRED
    expected |= {f"django_presence.W00{i}" for i in range(1, 5)}
    assert used == expected
