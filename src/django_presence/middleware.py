"""JSON Web Token authentication, and origin validation that says why it refused.

The token is read from the ``Sec-WebSocket-Protocol`` header, where a browser puts it with
``new WebSocket(url, ["access_token", token])`` so that it never appears in a URL (and so in
no proxy or access log), or else from the ``token`` query parameter.

By default tokens are verified the way djangorestframework-simplejwt issues them: HS256
signed with ``settings.SECRET_KEY``, the user id in the ``user_id`` claim, ``exp``
required, and only ``access`` tokens when a ``token_type`` claim is present. Algorithms
always come from ``DJANGO_PRESENCE["JWT_ALGORITHMS"]``, never from the token.

A connection with a token that fails any check is rejected before the consumer runs (the
client sees HTTP 403). A connection with no token reaches the inner application with the
user set by outer middleware, or ``AnonymousUser``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import ParseResult, parse_qs, urlparse

import jwt
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator as ChannelsOriginValidator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from . import metrics, protocol
from .conf import presence_settings, valid_setting
from .exceptions import InvalidToken
from .ids import pk_from_claim

logger = logging.getLogger(__name__)


def _verifying_key() -> Any:
    key = presence_settings.JWT_VERIFYING_KEY or presence_settings.JWT_SIGNING_KEY
    return key if key is not None else settings.SECRET_KEY


def decode_token(token: str) -> dict[str, Any]:
    """Verify ``token`` and return its claims, or raise :class:`InvalidToken`.

    Checks the signature with one of the configured algorithms, ``exp`` (required),
    ``nbf``, ``iat``, the audience and issuer when configured, the presence of the user
    id claim, and simplejwt's ``token_type`` when present.
    """
    claim = presence_settings.JWT_USER_ID_CLAIM
    audience = presence_settings.JWT_AUDIENCE
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            _verifying_key(),
            algorithms=list(valid_setting("JWT_ALGORITHMS")),
            audience=audience,
            issuer=presence_settings.JWT_ISSUER,
            leeway=presence_settings.JWT_LEEWAY,
            options={"require": ["exp", claim], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError as e:
        raise InvalidToken(f"{type(e).__name__}: {e}", reason="expired") from e
    except jwt.PyJWTError as e:
        raise InvalidToken(f"{type(e).__name__}: {e}") from e
    token_type = payload.get("token_type")
    if token_type is not None and token_type != "access":
        raise InvalidToken(
            f"Only access tokens are accepted, got token_type={token_type!r}", reason="not_access"
        )
    return payload


@database_sync_to_async
def get_user_for_token(payload: dict[str, Any]) -> Any:
    """The active user named by a verified token's claims, or raise InvalidToken.

    The user id claim must be an integer or the primary key's exact string form
    (:func:`~django_presence.ids.pk_from_claim`): a validly signed token whose id is
    ``1.9`` or ``true`` names nobody.
    """
    user_id = payload[presence_settings.JWT_USER_ID_CLAIM]
    try:
        pk = pk_from_claim(user_id)
    except ValueError as e:
        raise InvalidToken(f"The user id claim {user_id!r:.60} is not a user id") from e
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get(pk=pk)
    except user_model.DoesNotExist as e:
        raise InvalidToken(f"No user with id {user_id!r}", reason="unknown_user") from e
    if not getattr(user, "is_active", True):
        raise InvalidToken(f"User {user_id!r} is inactive", reason="inactive_user")
    return user


def refusal_log_level() -> int:
    """The level at which refused connections are logged: WARNING if DEBUG, else DEBUG.

    In development a refused handshake must say why where the developer looks; in
    production a client retrying a stale token, or an attack, would flood the log, and
    the ``tokens_rejected`` and ``connections_refused`` counters show the rate.
    """
    return logging.WARNING if settings.DEBUG else logging.DEBUG


def token_from_scope(scope: dict[str, Any]) -> tuple[str | None, bool]:
    """The token of a connection and whether it came as a subprotocol."""
    subprotocols = list(scope.get("subprotocols") or ())
    if protocol.TOKEN_SUBPROTOCOL in subprotocols:
        index = subprotocols.index(protocol.TOKEN_SUBPROTOCOL)
        if index + 1 < len(subprotocols):
            return subprotocols[index + 1], True
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    return (tokens[0] if tokens else None), False


class JWTAuthMiddleware(BaseMiddleware):
    """Set ``scope["user"]`` from a JSON Web Token; reject connections with a bad one.

    On success the scope also carries ``presence_token_exp`` (the token's ``exp``), used
    by :class:`~django_presence.consumers.UserOnlineStatusMixin` to close the socket when
    the token expires, and ``presence_token_subprotocol`` when the token came as a
    subprotocol.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        inner: Any = self.inner
        if scope.get("type") != "websocket":
            return await inner(scope, receive, send)
        token, via_subprotocol = token_from_scope(scope)
        scope = dict(scope)
        if token is None:
            scope.setdefault("user", AnonymousUser())
            return await inner(scope, receive, send)
        try:
            payload = decode_token(token)
            user = await get_user_for_token(payload)
        except InvalidToken as e:
            metrics.increment("tokens_rejected", reason=e.reason)
            logger.log(
                refusal_log_level(),
                "Rejected a WebSocket connection to %s: %s",
                scope.get("path"),
                e,
            )
            return await _reject(receive, send)
        scope["user"] = user
        scope["presence_token_exp"] = payload["exp"]
        scope["presence_token_subprotocol"] = via_subprotocol
        return await inner(scope, receive, send)


async def _reject(receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": protocol.CLOSE_UNAUTHENTICATED})


def JWTAuthMiddlewareStack(inner: Any) -> Any:
    """Wrap ``inner`` in :class:`JWTAuthMiddleware` (like Channels' ``AuthMiddlewareStack``)."""
    return JWTAuthMiddleware(inner)


class OriginValidator(ChannelsOriginValidator):
    """Channels' ``OriginValidator``, which says in the log why it refused a handshake.

    Channels' ``AllowedHostsOriginValidator`` refuses a handshake whose ``Origin`` is not
    allowed with a bare HTTP 403 and not a word in any log: the developer sees a client
    that cannot connect, and nothing else. This one accepts and refuses exactly the same
    origins (the same matching rules, which it inherits), and logs each refusal on the
    ``django_presence.middleware`` logger with the path, the origin and the allowed list
    (at WARNING when ``DEBUG``, else DEBUG: :func:`refusal_log_level`); the
    ``origins_refused`` counter gives the rate. Its refusal is a plain ASGI close before
    accept, with no consumer and no channel layer (Channels' ``WebsocketDenier`` is a
    consumer that waits on the layer, which can hold up a server's shutdown).

    ``allowed_origins`` is a list of patterns as for Channels' ``OriginValidator``; None
    (the default) means ``settings.ALLOWED_HOSTS``, read at each handshake, with
    ``AllowedHostsOriginValidator``'s fallback to ``localhost``, ``127.0.0.1`` and ``[::1]``
    when it is empty and ``DEBUG`` is on.
    """

    def __init__(self, application: Any, allowed_origins: list[str] | None = None) -> None:
        self.application = application
        self._allowed_origins = None if allowed_origins is None else list(allowed_origins)

    @property
    def allowed_origins(self) -> list[str]:  # type: ignore[override]
        """The patterns a handshake's ``Origin`` is matched against, now."""
        if self._allowed_origins is not None:
            return self._allowed_origins
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        return allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("You cannot use OriginValidator on a non-WebSocket connection")
        origin: str | None = None
        parsed: ParseResult | None = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                origin = value.decode("latin1")
                try:
                    parsed = urlparse(origin)
                except ValueError:
                    parsed = None
        if self.valid_origin(parsed):
            application: Any = self.application
            return await application(scope, receive, send)
        metrics.increment("origins_refused")
        allowed = self.allowed_origins
        logger.log(
            refusal_log_level(),
            "Refused a WebSocket handshake to %s: %s is not allowed by %s (%s); the "
            "client sees HTTP 403",
            scope.get("path"),
            f"origin {origin!r}" if origin is not None else "a handshake without Origin",
            "ALLOWED_HOSTS" if self._allowed_origins is None else "allowed_origins",
            ", ".join(map(repr, allowed)) or "empty",
            extra={"origin": origin, "path": scope.get("path")},
        )
        return await _deny(receive, send)


def AllowedHostsOriginValidator(application: Any) -> OriginValidator:
    """A drop-in for Channels' ``AllowedHostsOriginValidator`` that logs its refusals."""
    return OriginValidator(application)


async def _deny(receive: Any, send: Any) -> None:
    """Refuse a handshake (HTTP 403) in plain ASGI: no consumer, no channel layer."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})
