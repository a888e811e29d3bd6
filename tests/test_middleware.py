"""JWTAuthMiddleware with real tokens, through Channels' WebsocketCommunicator."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import jwt
import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.exceptions import InvalidToken, PresenceImproperlyConfigured
from django_presence.middleware import (
    JWTAuthMiddleware,
    JWTAuthMiddlewareStack,
    decode_token,
    token_from_scope,
)
from django_presence.protocol import CLOSE_UNAUTHENTICATED as CLOSE_INVALID_TOKEN
from tests.asgi import application

from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):
    """Accepts everyone and says who the scope's user is."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json(
            {"authenticated": user.is_authenticated, "pk": getattr(user, "pk", None)}
        )


app = JWTAuthMiddlewareStack(WhoAmIConsumer.as_asgi())


@pytest.fixture
def user() -> Any:
    return get_user_model().objects.create_user("alice", password="x")


async def connect(path: str = "/ws/", subprotocols: list[str] | None = None) -> Any:
    communicator = WebsocketCommunicator(app, path, subprotocols=subprotocols)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_valid_token_in_query_string_sets_the_user(user: Any) -> None:
    communicator, connected, _ = await connect(f"/ws/?token={make_token(user.pk)}")
    assert connected
    assert await communicator.receive_json_from() == {"authenticated": True, "pk": user.pk}
    await communicator.disconnect()


async def test_valid_token_as_subprotocol_sets_the_user(user: Any) -> None:
    communicator, connected, _ = await connect(subprotocols=["access_token", make_token(user.pk)])
    assert connected
    assert await communicator.receive_json_from() == {"authenticated": True, "pk": user.pk}
    await communicator.disconnect()


async def test_no_token_leaves_an_anonymous_user() -> None:
    communicator, connected, _ = await connect()
    assert connected
    assert await communicator.receive_json_from() == {"authenticated": False, "pk": None}
    await communicator.disconnect()


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _alg_none_token(user_id: Any) -> str:
    header = _b64({"alg": "none", "typ": "JWT"})
    payload = _b64({"user_id": user_id, "exp": int(time.time()) + 300})
    return f"{header}.{payload}."


def _tampered(user_id: Any, other_id: Any) -> str:
    header, _, signature = make_token(user_id).split(".")
    payload = _b64({"user_id": other_id, "exp": int(time.time()) + 300})
    return f"{header}.{payload}.{signature}"


BAD_TOKENS = {
    "expired": lambda u: make_token(u.pk, lifetime=-10),
    "wrong signature": lambda u: make_token(u.pk, key="another-key-" * 8),
    "alg none": lambda u: _alg_none_token(u.pk),
    "wrong algorithm": lambda u: make_token(u.pk, algorithm="HS512"),
    "missing user claim": lambda u: jwt.encode(
        {"sub": str(u.pk), "exp": int(time.time()) + 300}, "x" * 64, algorithm="HS256"
    ),
    "missing exp": lambda u: jwt.encode({"user_id": u.pk}, settings.SECRET_KEY, algorithm="HS256"),
    "unknown user": lambda u: make_token(u.pk + 1000),
    "refresh token": lambda u: make_token(u.pk, token_type="refresh"),
    "tampered payload": lambda u: _tampered(u.pk, u.pk + 1),
    "garbage": lambda u: "not-a-jwt",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize("transport", ["query", "subprotocol"])
async def test_invalid_tokens_are_rejected_before_the_consumer_runs(
    user: Any, kind: str, transport: str
) -> None:
    token = BAD_TOKENS[kind](user)
    if transport == "query":
        communicator, connected, code = await connect(f"/ws/?token={token}")
    else:
        communicator, connected, code = await connect(subprotocols=["access_token", token])
    assert not connected
    assert code == CLOSE_INVALID_TOKEN
    assert await communicator.receive_nothing()


async def test_inactive_user_is_rejected(user: Any) -> None:
    user.is_active = False
    await user.asave()
    _, connected, code = await connect(f"/ws/?token={make_token(user.pk)}")
    assert (connected, code) == (False, CLOSE_INVALID_TOKEN)


async def test_simplejwt_style_access_token_is_accepted(user: Any) -> None:
    token = make_token(user.pk, token_type="access", jti="abc", iat=int(time.time()))
    communicator, connected, _ = await connect(f"/ws/?token={token}")
    assert connected
    await communicator.disconnect()


def test_decode_token_uses_configured_algorithms_audience_and_issuer(user: Any) -> None:
    key = "k" * 64
    config = {
        "JWT_ALGORITHMS": ["HS512"],
        "JWT_SIGNING_KEY": key,
        "JWT_AUDIENCE": "presence",
        "JWT_ISSUER": "https://auth.example",
    }
    good = make_token(
        user.pk, key=key, algorithm="HS512", aud="presence", iss="https://auth.example"
    )
    with override_settings(DJANGO_PRESENCE=config):
        assert decode_token(good)["user_id"] == user.pk
        for bad in (
            make_token(
                user.pk, key=key, algorithm="HS512", aud="other", iss="https://auth.example"
            ),
            make_token(user.pk, key=key, algorithm="HS512", aud="presence", iss="https://evil"),
            make_token(user.pk, key=key, algorithm="HS512", iss="https://auth.example"),
            make_token(user.pk, key=key, aud="presence", iss="https://auth.example"),
        ):
            with pytest.raises(InvalidToken):
                decode_token(bad)


def test_decode_token_reads_secret_key_at_call_time(user: Any) -> None:
    new_key = "rotated-secret-key-that-is-long-enough-0123456789"
    token = make_token(user.pk, key=new_key)
    with pytest.raises(InvalidToken):
        decode_token(token)
    with override_settings(SECRET_KEY=new_key):
        assert decode_token(token)["user_id"] == user.pk


@pytest.mark.parametrize("algorithms", [[], ["none"], "HS256", [None]])
def test_decode_token_refuses_an_insecure_algorithm_list(algorithms: Any) -> None:
    with (
        override_settings(DJANGO_PRESENCE={"JWT_ALGORITHMS": algorithms}),
        pytest.raises(PresenceImproperlyConfigured, match="JWT_ALGORITHMS"),
    ):
        decode_token(make_token(1))


def test_token_from_scope_prefers_the_subprotocol() -> None:
    scope = {"subprotocols": ["access_token", "sub-token"], "query_string": b"token=query-token"}
    assert token_from_scope(scope) == ("sub-token", True)
    assert token_from_scope({"query_string": b"token=query-token"}) == ("query-token", False)
    assert token_from_scope({"subprotocols": ["access_token"], "query_string": b""}) == (
        None,
        False,
    )


async def test_http_scopes_pass_through_untouched() -> None:
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    await JWTAuthMiddleware(inner)({"type": "http", "query_string": b"token=x"}, None, None)
    assert seen == [{"type": "http", "query_string": b"token=x"}]


async def test_access_tokens_minted_by_simplejwt_authenticate_without_configuration(
    user: Any,
) -> None:
    from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

    access = str(AccessToken.for_user(user))
    communicator, connected, _ = await connect(subprotocols=["access_token", access])
    assert connected
    assert await communicator.receive_json_from() == {"authenticated": True, "pk": user.pk}
    await communicator.disconnect()

    # Its refresh tokens are not access tokens: refused.
    refresh = str(RefreshToken.for_user(user))
    _, connected, code = await connect(subprotocols=["access_token", refresh])
    assert (connected, code) == (False, CLOSE_INVALID_TOKEN)


async def test_refused_handshakes_are_counted_by_reason_and_logged_at_debug(
    user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from django_presence import metrics

    inactive = await get_user_model().objects.acreate(username="gone", is_active=False)
    tokens = {
        "expired": make_token(user.pk, lifetime=-60),
        "invalid": make_token(user.pk, key="not-the-secret-key-but-long-enough-for-hs256"),
        "not_access": make_token(user.pk, token_type="refresh"),
        "unknown_user": make_token(987654),
        "inactive_user": make_token(inactive.pk),
    }
    metrics.reset()
    caplog.set_level("INFO", logger="django_presence.middleware")
    for token in tokens.values():
        _, connected, code = await connect(f"/ws/?token={token}")
        assert (connected, code) == (False, CLOSE_INVALID_TOKEN)
    assert caplog.records == []  # nothing at INFO: an attack must not flood the log

    snap = metrics.snapshot()
    counted = {reason: snap[f'tokens_rejected{{reason="{reason}"}}'] for reason in tokens}
    assert counted == dict.fromkeys(tokens, 1)
    caplog.set_level("DEBUG", logger="django_presence.middleware")
    await connect(f"/ws/?token={tokens['expired']}")
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
    assert "ExpiredSignatureError" in caplog.records[0].getMessage()
    metrics.reset()


@pytest.mark.parametrize(("debug", "level"), [(True, logging.WARNING), (False, logging.DEBUG)])
async def test_a_refused_handshake_says_why_where_a_developer_looks(
    presence: dict[str, Any], caplog: pytest.LogCaptureFixture, debug: bool, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="django_presence")
    with override_settings(DEBUG=debug):
        communicator = WebsocketCommunicator(application, "/ws/user/?token=not-a-token")
        assert (await communicator.connect())[0] is False
    [record] = [r for r in caplog.records if r.getMessage().startswith("Rejected a WebSocket")]
    assert record.levelno == level
    assert "DecodeError" in record.getMessage()


# -- OriginValidator: refuses like Channels' AllowedHostsOriginValidator, and says why -----


def who() -> Any:
    return JWTAuthMiddlewareStack(WhoAmIConsumer.as_asgi())


def origin_app(validator: Any = None) -> Any:
    from django_presence.middleware import AllowedHostsOriginValidator

    return (validator or AllowedHostsOriginValidator)(who())


async def handshake(app: Any, origin: bytes | None) -> tuple[bool, Any]:
    headers = [(b"origin", origin)] if origin is not None else []
    communicator = WebsocketCommunicator(app, "/ws/who/", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected, code


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (b"https://example.com", True),
        (b"https://www.example.com", True),  # ".example.com" allows subdomains
        (b"http://example.com:8000", True),
        (b"https://evil.example.org", False),
        (b"null", False),
        (None, False),
    ],
)
async def test_origin_validator_allows_what_channels_allows(
    origin: bytes | None, allowed: bool
) -> None:
    from channels.security.websocket import AllowedHostsOriginValidator as Channels

    with override_settings(ALLOWED_HOSTS=[".example.com"]):
        ours = await handshake(origin_app(), origin)
        theirs = await handshake(Channels(who()), origin)
    assert ours[0] is allowed
    assert ours == theirs


@pytest.mark.parametrize(("debug", "level"), [(True, "WARNING"), (False, "DEBUG")])
async def test_origin_validator_logs_the_refused_origin(
    caplog: pytest.LogCaptureFixture, debug: bool, level: str
) -> None:
    from django_presence import metrics

    metrics.reset()
    caplog.set_level("DEBUG", logger="django_presence.middleware")
    with override_settings(DEBUG=debug, ALLOWED_HOSTS=["example.com"]):
        assert await handshake(origin_app(), b"http://localhost:3000") == (False, 1000)
    [record] = caplog.records
    assert record.levelname == level
    message = record.getMessage()
    assert "/ws/who/" in message
    assert "'http://localhost:3000'" in message
    assert "ALLOWED_HOSTS ('example.com')" in message
    assert record.origin == "http://localhost:3000"  # type: ignore[attr-defined]
    assert metrics.snapshot()["origins_refused"] == 1


async def test_origin_validator_with_its_own_list_and_no_origin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django_presence.middleware import OriginValidator

    caplog.set_level("DEBUG", logger="django_presence.middleware")
    app = OriginValidator(who(), ["https://app.example.com"])
    with override_settings(ALLOWED_HOSTS=["*"]):
        assert (await handshake(app, b"https://app.example.com"))[0]
        assert not (await handshake(app, b"https://example.com"))[0]
        assert not (await handshake(app, None))[0]
    messages = [r.getMessage() for r in caplog.records]
    assert "allowed_origins ('https://app.example.com')" in messages[0]
    assert "a handshake without Origin" in messages[1]


async def test_origin_validator_reads_allowed_hosts_at_each_handshake() -> None:
    app = origin_app()
    with override_settings(ALLOWED_HOSTS=["one.example"]):
        assert (await handshake(app, b"https://one.example"))[0]
    with override_settings(ALLOWED_HOSTS=["two.example"]):
        assert not (await handshake(app, b"https://one.example"))[0]
    with override_settings(ALLOWED_HOSTS=[], DEBUG=True):
        assert (await handshake(app, b"http://localhost:8000"))[0]


async def test_origin_validator_refuses_without_the_channel_layer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import channels.consumer
    from channels.security.websocket import AllowedHostsOriginValidator as Channels

    layers: list[str] = []

    def get_channel_layer(alias: str = "default") -> None:
        layers.append(alias)
        return None

    monkeypatch.setattr(channels.consumer, "get_channel_layer", get_channel_layer)
    with override_settings(ALLOWED_HOSTS=["example.com"]):
        await handshake(origin_app(), b"https://evil.example")
        assert layers == []  # ours: a plain ASGI close
        await handshake(Channels(origin_app()), b"https://evil.example")
        assert layers == ["default"]  # Channels' WebsocketDenier is a consumer


async def test_origin_validator_refuses_other_scope_types() -> None:
    with pytest.raises(ValueError, match="non-WebSocket"):
        await origin_app()({"type": "http"}, None, None)
