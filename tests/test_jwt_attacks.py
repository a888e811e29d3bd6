"""Attacks on the JWT authentication of ws/user/: every forged or unfit token is refused.

Through the real stack (``tests.asgi.application``: JWTAuthMiddlewareStack and the
package's routes) with WebsocketCommunicator, where a refusal is a close with code 4003
before accept; and once through a real uvicorn server, where the client sees HTTP 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.backends import reset_backend
from django_presence.protocol import CLOSE_UNAUTHENTICATED as CLOSE_INVALID_TOKEN
from tests.asgi import application

from .faults.conftest import fault_db, make_stack  # noqa: F401 - fixtures of the server test
from .faults.harness import FaultDatabase, Stack, token_for

pytestmark = pytest.mark.django_db(transaction=True)

AUDIENCE = "presence-clients"
ISSUER = "https://auth.example.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, as an attacker would: HMAC-SHA256 with ``key``, or unsigned."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def claims(user_id: Any, **extra: Any) -> dict[str, Any]:
    """Valid simplejwt-like claims for ``user_id``, updated with ``extra``."""
    return {"user_id": user_id, "exp": int(time.time()) + 300, "token_type": "access", **extra}


def hs256(payload: dict[str, Any], key: str | None = None, **headers: Any) -> str:
    """A correctly signed HS256 token (with the project's SECRET_KEY by default)."""
    return jwt.encode(payload, key or settings.SECRET_KEY, algorithm="HS256", headers=headers)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
    """An RSA key pair: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture
def jwt_settings() -> Iterator[Any]:
    """Override DJANGO_PRESENCE keys for one test: ``jwt_settings(JWT_AUDIENCE=...)``."""
    stack: list[Any] = []

    def configure(**overrides: Any) -> None:
        override = override_settings(DJANGO_PRESENCE={**settings.DJANGO_PRESENCE, **overrides})
        override.enable()
        stack.append(override)

    yield configure
    for override in reversed(stack):
        override.disable()
    reset_backend()


@pytest.fixture
def alice() -> Any:
    """An active user."""
    return get_user_model().objects.create_user("alice")


async def outcome(token: str, *, via: str = "subprotocol") -> tuple[bool, int | None]:
    """(connected, close code) of a ws/user/ connection with ``token``."""
    if via == "subprotocol":
        tab = WebsocketCommunicator(application, "/ws/user/", subprotocols=["access_token", token])
    else:
        tab = WebsocketCommunicator(application, f"/ws/user/?token={token}")
    connected, code = await tab.connect(timeout=5)
    if connected:
        await tab.disconnect()
    # A refused connection leaves the middleware's database connection open in Channels'
    # database thread (seen on PostgreSQL: the test database cannot be dropped at the end
    # of the session); one more call there closes it.
    await database_sync_to_async(lambda: None)()
    return connected, code


REFUSED = (False, CLOSE_INVALID_TOKEN)


async def orm(query: Any) -> Any:
    """Run ``query()`` through Channels' ``database_sync_to_async``.

    Unlike Django's ``a``-methods, it closes the thread's connection afterwards, so that
    the PostgreSQL test database can be dropped at the end of the session.
    """
    return await database_sync_to_async(query)()


async def test_a_valid_token_connects(alice: Any) -> None:
    """The control case: the attacks below fail for their flaw, not for the setup."""
    assert (await outcome(hs256(claims(alice.pk))))[0]
    assert (await outcome(hs256(claims(alice.pk)), via="query"))[0]


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused(alice: Any, alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, claims(alice.pk), key=None)
    assert await outcome(token) == REFUSED
    assert await outcome(token, via="query") == REFUSED


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    alice: Any, rsa_keys: tuple[bytes, bytes], jwt_settings: Any
) -> None:
    """Key confusion: the attacker knows the public key and signs with it as an HMAC secret."""
    private, public = rsa_keys
    jwt_settings(JWT_ALGORITHMS=["RS256"], JWT_SIGNING_KEY=private, JWT_VERIFYING_KEY=public)
    genuine = jwt.encode(claims(alice.pk), private, algorithm="RS256")
    assert (await outcome(genuine))[0]

    forged = forge({"alg": "HS256", "typ": "JWT"}, claims(alice.pk), key=public)
    assert await outcome(forged) == REFUSED
    # Also when a careless project allows both families with the same (public) key.
    jwt_settings(
        JWT_ALGORITHMS=["RS256", "HS256"], JWT_SIGNING_KEY=private, JWT_VERIFYING_KEY=public
    )
    assert await outcome(forged) == REFUSED


async def test_a_token_signed_with_another_key_or_algorithm_is_refused(alice: Any) -> None:
    assert await outcome(hs256(claims(alice.pk), key="x" * 64)) == REFUSED
    other_alg = jwt.encode(claims(alice.pk), settings.SECRET_KEY, algorithm="HS512")
    assert await outcome(other_alg) == REFUSED


async def test_expired_token_is_refused(alice: Any) -> None:
    expired = hs256(claims(alice.pk, exp=int(time.time()) - 1))
    assert await outcome(expired) == REFUSED


async def test_token_without_exp_is_refused(alice: Any) -> None:
    payload = claims(alice.pk)
    del payload["exp"]
    assert await outcome(hs256(payload)) == REFUSED


async def test_not_yet_valid_token_is_refused(alice: Any) -> None:
    later = int(time.time()) + 120
    assert await outcome(hs256(claims(alice.pk, nbf=later))) == REFUSED
    assert await outcome(hs256(claims(alice.pk, iat=later))) == REFUSED


async def test_wrong_or_missing_audience_is_refused_when_configured(
    alice: Any, jwt_settings: Any
) -> None:
    jwt_settings(JWT_AUDIENCE=AUDIENCE)
    assert (await outcome(hs256(claims(alice.pk, aud=AUDIENCE))))[0]
    assert await outcome(hs256(claims(alice.pk, aud="someone-else"))) == REFUSED
    assert await outcome(hs256(claims(alice.pk))) == REFUSED


async def test_wrong_or_missing_issuer_is_refused_when_configured(
    alice: Any, jwt_settings: Any
) -> None:
    jwt_settings(JWT_ISSUER=ISSUER)
    assert (await outcome(hs256(claims(alice.pk, iss=ISSUER))))[0]
    assert await outcome(hs256(claims(alice.pk, iss="https://evil.example.com"))) == REFUSED
    assert await outcome(hs256(claims(alice.pk))) == REFUSED


async def test_tampered_payload_is_refused(alice: Any) -> None:
    """The payload of a genuine token is swapped for another user's; the signature is kept."""
    bob = await orm(lambda: get_user_model().objects.create(username="bob", is_staff=True))
    header, _, signature = hs256(claims(alice.pk)).split(".")
    for payload in (
        claims(bob.pk),
        claims(alice.pk, exp=int(time.time()) + 10**8),
        claims(alice.pk, token_type="access", is_staff=True),
    ):
        tampered = f"{header}.{_b64(json.dumps(payload).encode())}.{signature}"
        assert await outcome(tampered) == REFUSED


async def test_refresh_token_is_refused(alice: Any) -> None:
    assert await outcome(hs256(claims(alice.pk, token_type="refresh"))) == REFUSED


async def test_token_of_a_deleted_or_inactive_user_is_refused(alice: Any) -> None:
    token = hs256(claims(alice.pk))
    alice.is_active = False
    await orm(alice.save)
    assert await outcome(token) == REFUSED
    await orm(alice.delete)
    assert await outcome(token) == REFUSED


@pytest.mark.parametrize(
    "token",
    ["", ".", "..", "a.b.c", "not-a-token", "x" * 10_000, "e30.e30.", "\u00e9.\u00e9.\u00e9"],
)
async def test_garbage_tokens_are_refused(alice: Any, token: str) -> None:
    assert await outcome(token, via="query") == REFUSED


@pytest.mark.parametrize("claim", [None, "", [], {}, 1.5, True, "1 OR 1=1", 2**70])
async def test_odd_user_id_claims_are_refused(alice: Any, claim: Any) -> None:
    assert await outcome(hs256(claims(claim))) == REFUSED


@pytest.mark.server
async def test_real_server_answers_403_to_forged_tokens(
    make_stack: Any,  # noqa: F811 - the fixture imported above
    fault_db: FaultDatabase,  # noqa: F811
) -> None:
    """A browser sees the refusal as an HTTP 403 on the upgrade, from a real uvicorn."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from .faults.harness import SECRET_KEY

    stack: Stack = make_stack()
    server = stack.start_server("jwt")
    user_id = fault_db.user_ids[-1]
    attacks = {
        "alg none": forge({"alg": "none"}, claims(user_id), key=None),
        "expired": token_for(user_id, lifetime=-10),
        "wrong key": hs256(claims(user_id), key="y" * 64),
        "inactive user": jwt.encode(claims(fault_db.inactive_id), SECRET_KEY, "HS256"),
        "deleted user": jwt.encode(claims(10**9), SECRET_KEY, "HS256"),
    }
    statuses = {}
    for name, token in attacks.items():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                server.url,
                subprotocols=["access_token", token],  # type: ignore[list-item]
                proxy=None,
                open_timeout=20,
            ):
                pass
        statuses[name] = refused.value.response.status_code
    assert statuses == dict.fromkeys(attacks, 403)
    # The control: the same server accepts a genuine token.
    async with connect(
        server.url,
        subprotocols=["access_token", token_for(user_id)],  # type: ignore[list-item]
        proxy=None,
        open_timeout=20,
    ) as ws:
        assert ws.subprotocol == "access_token"
