"""System checks: each ID fires for its problem, alone, and a good configuration is clean."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core import checks
from django.test import override_settings

import django_presence.checks
from django_presence.backends.memory import MemoryBackend
from django_presence.conf import DEFAULTS, SPECS
from django_presence.policies import DefaultPolicy

REDIS = "django_presence.backends.redis.RedisBackend"
PRIVATE = "django_presence.policies.DefaultPolicy"
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


def test_e001_checks_the_fields_not_the_mixin() -> None:
    from django.contrib.auth import get_user_model
    from django.db import models

    from django_presence.store import user_field_problems

    with override_settings(DJANGO_PRESENCE={"ONLINE_FIELD": "is_active"}):
        # A project's own BooleanField passes, whatever its name.
        assert user_field_problems(get_user_model()) == []
    with override_settings(DJANGO_PRESENCE={"LAST_SEEN_FIELD": "last_login"}):
        assert user_field_problems(get_user_model()) == []  # DateTimeField, null=True
    with override_settings(DJANGO_PRESENCE={"LAST_SEEN_FIELD": "date_joined"}):
        # Not null=True: users who never went offline have no value to hold.
        assert user_field_problems(get_user_model()) == [
            "has a field 'date_joined' that is not a DateTimeField with null=True"
        ]

    class Fields(models.Model):
        online = models.BooleanField(default=False)
        seen = models.DateTimeField(null=True)
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "testapp"
            abstract = True

    with override_settings(DJANGO_PRESENCE={"ONLINE_FIELD": "online", "LAST_SEEN_FIELD": "seen"}):
        assert user_field_problems(Fields) == []
    with override_settings(DJANGO_PRESENCE={"ONLINE_FIELD": "name", "LAST_SEEN_FIELD": "x"}):
        assert user_field_problems(Fields) == [
            "has a field 'name' that is not a BooleanField",
            "has no field 'x'",
        ]


def test_e001_names_the_missing_fields_and_honours_store() -> None:
    from django_presence.checks import check_user_model

    with override_settings(DJANGO_PRESENCE={"ONLINE_FIELD": "online"}):
        [message] = check_user_model()
        assert message.id == "django_presence.E001"
        assert "has no field 'online'" in message.msg
        for store in ("table", None):
            with override_settings(DJANGO_PRESENCE={"ONLINE_FIELD": "online", "STORE": store}):
                assert check_user_model() == []
    # The default user, with the package's table: nothing to add to the model.
    with (
        override_settings(AUTH_USER_MODEL="auth.User"),
        override_settings(DJANGO_PRESENCE={"STORE": "table"}),
    ):
        assert check_user_model() == []


@pytest.mark.parametrize(
    ("store", "sync", "expected"),
    [
        ("user", False, ["django_presence.E017"]),
        ("table", False, ["django_presence.E017"]),
        (None, True, ["django_presence.E017"]),
        ("user", True, []),
        ("table", True, []),
        (None, False, []),
    ],
)
def test_e017_store_contradicts_sync_user_model(
    store: Any, sync: bool, expected: list[str]
) -> None:
    assert presence_ids(STORE=store, SYNC_USER_MODEL=sync) == expected


def test_store_succeeds_sync_user_model() -> None:
    from django_presence.store import store_kind

    def kind(**presence: Any) -> Any:
        with override_settings(DJANGO_PRESENCE=presence):
            return store_kind()

    assert kind() == "user"
    assert kind(SYNC_USER_MODEL=False) is None  # configured before STORE existed
    assert kind(SYNC_USER_MODEL=True) == "user"
    assert kind(STORE="table") == "table"
    assert kind(STORE=None) is None
    assert kind(STORE="table", SYNC_USER_MODEL=False) == "table"  # E017; STORE wins


def test_w006_a_mixin_listed_before_abstractuser_takes_its_meta() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import AbstractUser
    from django.db import models
    from django.test.utils import isolate_apps

    from django_presence.checks import meta_warnings
    from django_presence.models import OnlineStatusMixin

    with isolate_apps("tests.testapp"):

        class StampMixin(models.Model):
            stamp = models.DateTimeField(null=True)

            class Meta:
                abstract = True

        class Shadowed(StampMixin, AbstractUser):  # noqa: DJ008
            __module__ = "tests.testapp.models"

        class Ordered(AbstractUser, StampMixin):  # noqa: DJ008
            __module__ = "tests.testapp.models"

        class MixinFirst(OnlineStatusMixin, AbstractUser):
            __module__ = "tests.testapp.models"

        class OwnMeta(StampMixin, AbstractUser):  # noqa: DJ008
            __module__ = "tests.testapp.models"

            class Meta(AbstractUser.Meta):
                swappable = None

    [warning] = meta_warnings(Shadowed)
    assert warning.id == "django_presence.W006"
    assert "StampMixin" in warning.msg
    assert "verbose_name" in warning.msg
    assert meta_warnings(Ordered) == []
    assert meta_warnings(OwnMeta) == []
    # The package's mixin leaves no Meta to inherit: either order keeps AbstractUser's.
    assert meta_warnings(MixinFirst) == []
    assert MixinFirst._meta.verbose_name_plural == "users"
    assert meta_warnings(get_user_model()) == []
    assert get_user_model()._meta.original_attrs["verbose_name"] == "user"


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


def test_e010_policy_unusable_and_a_check_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module that fails on import with something other than ImportError.
    (tmp_path / "presence_broken_policy.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with override_settings(
        DJANGO_PRESENCE={**settings.DJANGO_PRESENCE, "POLICY": "presence_broken_policy.Policy"}
    ):
        [message] = [m for m in checks.run_checks() if m.id == "django_presence.E010"]
    assert "DJANGO_PRESENCE['POLICY'] = 'presence_broken_policy.Policy'" in message.msg
    assert "RuntimeError: boom" in message.msg


def test_e014_backend_options_that_do_not_fit_the_backend() -> None:
    assert presence_ids(BACKEND_OPTIONS={"url": "redis://x"}) == ["django_presence.E014"]
    assert presence_ids(BACKEND=REDIS, BACKEND_OPTIONS={"url": "redis://x"}) == []
    assert presence_ids(BACKEND=REDIS, BACKEND_OPTIONS={"urls": "redis://x"}) == [
        "django_presence.E014"
    ]


#: For every setting, bad values and the exact IDs they raise (each fails alone).
BAD_VALUES: list[tuple[str, Any, list[str]]] = [
    ("BACKEND", "no.such.Backend", ["E002"]),
    ("BACKEND", MemoryBackend(), ["E002"]),
    ("BACKEND_OPTIONS", [], ["E014"]),
    ("BACKEND_OPTIONS", {1: 2}, ["E014"]),
    ("BACKEND_OPTIONS", "url=redis://x", ["E014"]),
    ("REDIS_URL", "", ["E013"]),
    ("REDIS_URL", None, ["E013"]),
    ("KEY_PREFIX", "a{b}", ["E013"]),
    ("KEY_PREFIX", "", ["E013"]),
    ("KEY_PREFIX", 3, ["E013"]),
    ("CONNECTION_TTL", float("nan"), ["E004"]),
    ("HEARTBEAT_INTERVAL", -1, ["E004"]),
    ("OFFLINE_GRACE_PERIOD", "5", ["E004"]),
    ("SYNC_USER_MODEL", "False", ["E012"]),
    ("SYNC_USER_MODEL", 1, ["E012"]),
    ("SYNC_USER_MODEL", None, ["E012"]),
    ("STORE", "db", ["E016"]),
    ("STORE", True, ["E016"]),
    ("STORE", "", ["E016"]),
    ("ONLINE_FIELD", "", ["E013"]),
    ("ONLINE_FIELD", "presence.is_online", ["E013"]),
    ("LAST_SEEN_FIELD", None, ["E013"]),
    ("TRANSITION_BATCH_WINDOW", -0.1, ["E004"]),
    ("TRANSITION_BATCH_WINDOW", None, ["E004"]),
    ("CHANNEL_LAYER", "", ["E013"]),
    ("CHANNEL_LAYER", None, ["E013"]),
    ("JWT_ALGORITHMS", ("none",), ["E005"]),
    ("JWT_SIGNING_KEY", 12345, ["E015"]),
    ("JWT_SIGNING_KEY", "", ["E015"]),
    ("JWT_SIGNING_KEY", ["k" * 32], ["E015"]),
    ("JWT_VERIFYING_KEY", 3, ["E015"]),
    ("JWT_VERIFYING_KEY", b"", ["E015"]),
    ("JWT_VERIFYING_KEY", {"kty": "RSA"}, ["E015"]),
    ("JWT_USER_ID_CLAIM", "", ["E013"]),
    ("JWT_USER_ID_CLAIM", 1, ["E013"]),
    ("JWT_AUDIENCE", "", ["E015"]),
    ("JWT_AUDIENCE", [], ["E015"]),
    ("JWT_AUDIENCE", ["web", None], ["E015"]),
    ("JWT_AUDIENCE", 3, ["E015"]),
    ("JWT_ISSUER", "", ["E015"]),
    ("JWT_ISSUER", 3, ["E015"]),
    ("JWT_LEEWAY", -1, ["E004"]),
    ("JWT_LEEWAY", "5", ["E004"]),
    ("JWT_LEEWAY", timedelta(seconds=-1), ["E004"]),
    ("DISCONNECT_ON_LOGOUT", "yes", ["E012"]),
    ("DISCONNECT_ON_PASSWORD_CHANGE", 0, ["E012"]),
    ("DISCONNECT_ON_DEACTIVATE", "False", ["E012"]),
    ("POLICY", "no.such.Policy", ["E010"]),
    ("POLICY", "nodots", ["E010"]),
    ("POLICY", "django_presence.policies.get_policy_class", ["E010"]),
    ("POLICY", DefaultPolicy(), ["E010"]),
    ("POLICY", 42, ["E010"]),
    ("POLICY", None, ["E010"]),
    ("MAX_FRAME_SIZE", 0, ["E011"]),
    ("MAX_FRAME_SIZE", "64k", ["E011"]),
    ("MAX_FRAME_SIZE", None, ["E011"]),
    ("RATE_LIMIT_RATE", 0, ["E011"]),
    ("RATE_LIMIT_RATE", "fast", ["E011"]),
    ("RATE_LIMIT_BURST", 0.5, ["E011"]),
    ("RATE_LIMIT_BURST", None, ["E011"]),
    ("USER_RATE_LIMIT_RATE", -1, ["E011"]),
    ("USER_RATE_LIMIT_RATE", True, ["E011"]),
    ("USER_RATE_LIMIT_BURST", None, ["E011"]),
    ("FLOOD_CLOSE_AFTER", 0, ["E011"]),
    ("FLOOD_CLOSE_AFTER", 2.5, ["E011"]),
    ("FLOOD_CLOSE_AFTER", True, ["E011"]),
    ("FLOOD_WINDOW", 0, ["E004"]),
    ("FLOOD_WINDOW", None, ["E004"]),
    ("MAX_WATCHED_USERS", -1, ["E011"]),
    ("MAX_WATCHED_USERS", None, ["E011"]),
    ("MAX_GROUPS", "100", ["E011"]),
    ("MAX_CONNECTIONS_PER_USER", 0, ["E011"]),
    ("MAX_CONNECTIONS_PER_USER", 2.5, ["E011"]),
    ("MAX_CONNECTIONS_PER_PROCESS", "10000", ["E011"]),
    ("GROUP_PRESENCE_MAX_MEMBERS", -1, ["E011"]),
    ("HISTORY_SIZE", -1, ["E011"]),
    ("HISTORY_SIZE", 2.5, ["E011"]),
    ("HISTORY_SIZE", None, ["E011"]),
    ("HISTORY_TTL", 0, ["E004"]),
    ("HISTORY_META_TTL", "week", ["E004"]),
    ("UNDELIVERED_AFTER", 0, ["E011"]),
    ("UNDELIVERED_AFTER", True, ["E011"]),
    ("IDLE_AFTER", -1, ["E004"]),
    ("IDLE_AFTER", "5m", ["E004"]),
    ("ACTIVITY_WRITE_INTERVAL", None, ["E004"]),
    ("KEEP_PRESENT_ACTIVITIES", "in_call", ["E013"]),
    ("KEEP_PRESENT_ACTIVITIES", ["in_call", ""], ["E013"]),
    ("PRESENCE_DATA_MAX_BYTES", 1.5, ["E011"]),
    ("PRESENCE_DATA_MAX_KEYS", -1, ["E011"]),
    ("PRESENCE_UPDATE_RATE", 0, ["E011"]),
    ("PRESENCE_UPDATE_PERIOD", 0, ["E004"]),
    ("STATUS_TEXT_MAX_LENGTH", None, ["E011"]),
    ("DEVICE_MAX_LENGTH", 0, ["E011"]),
    ("ACTIVITY_MAX_LENGTH", True, ["E011"]),
    ("METRICS_HOOK", "no.such.hook", ["E009"]),
]

#: Values the specs accept beyond the defaults (each passes alone).
GOOD_VALUES: list[tuple[str, Any]] = [
    ("BACKEND", MemoryBackend),
    ("BACKEND_OPTIONS", None),
    ("OFFLINE_GRACE_PERIOD", 0.5),
    ("TRANSITION_BATCH_WINDOW", 0),
    ("SYNC_USER_MODEL", False),
    ("STORE", "table"),
    ("STORE", None),
    ("JWT_ALGORITHMS", ("HS256", "HS512")),
    ("JWT_SIGNING_KEY", b"k" * 32),
    ("JWT_VERIFYING_KEY", object()),  # a key object, as cryptography's
    ("JWT_AUDIENCE", "web"),
    ("JWT_AUDIENCE", ["web", "app"]),
    ("JWT_ISSUER", ("https://a.example", "https://b.example")),
    ("JWT_LEEWAY", 2.5),
    ("JWT_LEEWAY", timedelta(seconds=10)),
    ("DISCONNECT_ON_LOGOUT", False),
    ("POLICY", DefaultPolicy),
    ("MAX_FRAME_SIZE", 1e6),
    ("RATE_LIMIT_RATE", None),
    ("RATE_LIMIT_RATE", 0.5),
    ("USER_RATE_LIMIT_RATE", None),
    ("RATE_LIMIT_BURST", 1),
    ("FLOOD_CLOSE_AFTER", None),
    ("FLOOD_WINDOW", 0.5),
    ("MAX_WATCHED_USERS", 0),
    ("MAX_GROUPS", 0),
    ("MAX_CONNECTIONS_PER_USER", None),
    ("MAX_CONNECTIONS_PER_PROCESS", 1),
    ("GROUP_PRESENCE_MAX_MEMBERS", 0),
    ("HISTORY_SIZE", 0),
    ("HISTORY_TTL", 0.5),
    ("UNDELIVERED_AFTER", None),
    ("UNDELIVERED_AFTER", 0.2),
    ("IDLE_AFTER", 0),
    ("ACTIVITY_WRITE_INTERVAL", 0),
    ("KEEP_PRESENT_ACTIVITIES", []),
    ("KEEP_PRESENT_ACTIVITIES", ("in_call", "surgery")),
    ("PRESENCE_DATA_MAX_KEYS", 0),
    ("PRESENCE_UPDATE_RATE", 1),
    ("METRICS_HOOK", print),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_every_setting_has_a_check(name: str, value: Any, expected: list[str]) -> None:
    assert presence_ids(**{name: value}) == [f"django_presence.{i}" for i in expected]


@pytest.mark.parametrize(("name", "value"), GOOD_VALUES)
def test_valid_values_pass(name: str, value: Any) -> None:
    assert presence_ids(**{name: value}) == []


def test_the_bad_values_cover_every_setting() -> None:
    assert sorted({name for name, _, _ in BAD_VALUES}) == sorted(DEFAULTS)


def test_each_setting_is_reported_by_its_spec_id() -> None:
    for name, _, expected in BAD_VALUES:
        assert [f"django_presence.{i}" for i in expected] == [SPECS[name].check_id], name


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_messages_name_the_key_and_show_the_value(
    name: str, value: Any, expected: list[str]
) -> None:
    with override_settings(DJANGO_PRESENCE={**settings.DJANGO_PRESENCE, name: value}):
        [message] = [m for m in checks.run_checks() if m.id == f"django_presence.{expected[0]}"]
    assert f"DJANGO_PRESENCE[{name!r}]" in message.msg
    assert repr(value) in message.msg


@override_settings(DEBUG=False)
def test_w001_memory_backend_in_production() -> None:
    assert presence_ids(POLICY=PRIVATE) == ["django_presence.W001"]
    assert presence_ids(BACKEND=REDIS, POLICY=PRIVATE) == []


@override_settings(DEBUG=False)
def test_w005_the_open_policy_in_production() -> None:
    open_policy = "django_presence.policies.OpenPolicy"
    assert presence_ids(BACKEND=REDIS, POLICY=open_policy) == ["django_presence.W005"]
    assert presence_ids(BACKEND=REDIS, POLICY=PRIVATE) == []
    with override_settings(DEBUG=True):
        assert presence_ids(BACKEND=REDIS, POLICY=open_policy) == []


def test_w002_heartbeat_too_close_to_ttl() -> None:
    assert presence_ids(CONNECTION_TTL=30, HEARTBEAT_INTERVAL=16) == ["django_presence.W002"]
    assert presence_ids(CONNECTION_TTL=30, HEARTBEAT_INTERVAL=15) == []


def test_w003_short_signing_key() -> None:
    assert presence_ids(JWT_SIGNING_KEY="short") == ["django_presence.W003"]
    assert presence_ids(JWT_SIGNING_KEY=b"x" * 32) == []
    with override_settings(SECRET_KEY="short-secret"):
        assert ids() == ["django_presence.W003"]


def test_a_secret_key_of_the_wrong_type_does_not_crash_the_checks() -> None:
    with override_settings(SECRET_KEY=12345):
        assert ids() == []


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
    used |= {spec.check_id for spec in SPECS.values()}

    assert len(documented) == len(set(documented))
    assert set(documented) == used | RETIRED
    assert not used & RETIRED
    expected = {f"django_presence.E{i:03}" for i in range(1, 18)} - RETIRED
    expected |= {f"django_presence.W00{i}" for i in range(1, 8)}
    assert used == expected


# -- W007: a route that swallows ws/user/ ------------------------------------------------------


def _routers() -> dict[str, Any]:
    from channels.auth import AuthMiddlewareStack
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    from django.urls import path, re_path

    from django_presence.middleware import JWTAuthMiddlewareStack
    from django_presence.routing import presence_urlpatterns, websocket_urlpatterns

    class RoomConsumer(AsyncWebsocketConsumer):
        pass

    room = path("ws/<str:room>/", RoomConsumer.as_asgi())

    def project(routes: list[Any]) -> Any:
        return ProtocolTypeRouter(
            {"websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes)))}
        )

    return {
        "CATCH_ALL_FIRST": project([room, *websocket_urlpatterns]),
        "CATCH_ALL_AFTER": project([*websocket_urlpatterns, room]),
        "OTHER_ROUTES_FIRST": project(
            [path("ws/chat/<int:pk>/", RoomConsumer.as_asgi()), *websocket_urlpatterns, room]
        ),
        "NESTED_CATCH_ALL_FIRST": JWTAuthMiddlewareStack(
            URLRouter(
                [
                    path(
                        "realtime/",
                        URLRouter(
                            [
                                re_path(r"^(?P<room>.+)/$", RoomConsumer.as_asgi()),
                                *presence_urlpatterns(""),
                            ]
                        ),
                    )
                ]
            )
        ),
        "NESTED_FINE": URLRouter(
            [path("realtime/", URLRouter(presence_urlpatterns(""))), room],
        ),
    }


ROUTERS: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # The routers are built on first use: pytest imports this module before Django is set up.
    if not ROUTERS:
        ROUTERS.update(_routers())
    try:
        return ROUTERS[name]
    except KeyError:
        raise AttributeError(name) from None


def route_warnings(application: str) -> list[Any]:
    from django_presence.checks import check_routes

    with override_settings(ASGI_APPLICATION=f"{__name__}.{application}"):
        return check_routes()


@pytest.mark.parametrize(
    ("application", "path"),
    [("CATCH_ALL_FIRST", "ws/user/"), ("NESTED_CATCH_ALL_FIRST", "realtime/user/")],
)
def test_w007_a_catch_all_before_the_package_route(application: str, path: str) -> None:
    [message] = route_warnings(application)
    assert message.id == "django_presence.W007"
    assert f"route {path!r}" in message.msg
    assert "RoomConsumer" in message.msg
    assert "reconnects forever" in message.msg


@pytest.mark.parametrize("application", ["CATCH_ALL_AFTER", "OTHER_ROUTES_FIRST", "NESTED_FINE"])
def test_w007_routes_that_leave_ws_user_alone(application: str) -> None:
    assert route_warnings(application) == []


def test_w007_runs_with_the_other_checks() -> None:
    with override_settings(ASGI_APPLICATION=f"{__name__}.CATCH_ALL_FIRST"):
        assert ids() == ["django_presence.W007"]
    assert ids() == []  # tests.asgi lists ws/user/ first


@pytest.mark.parametrize("value", [None, "", "tests.nowhere.application", 42])
def test_w007_says_nothing_without_a_readable_application(value: Any) -> None:
    from django_presence.checks import check_routes

    with override_settings(ASGI_APPLICATION=value):
        assert check_routes() == []
