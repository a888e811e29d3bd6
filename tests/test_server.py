"""The package under a real ASGI server (uvicorn) with real WebSocket clients.

``tests/test_server_matrix.py`` runs one scenario under both uvicorn and daphne.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from .servers import ASGI_SERVERS
from .servers import AsgiServer as Server
from .tokens import make_token


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Server]:
    """uvicorn, or the server a test names with ``parametrize("server", ..., indirect=True)``."""
    instance = Server(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        redis_url=redis_url,
        key_prefix=f"srv-{uuid.uuid4().hex[:10]}",
        server=getattr(request, "param", "uvicorn"),
    )
    instance.manage("migrate", "--verbosity", "0")
    instance.start()
    yield instance
    instance.stop()
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match="{" + instance.prefix + "}:*"))
        if keys:
            client.delete(*keys)


def create_user(server: Server, username: str) -> int:
    out = server.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"print(get_user_model().objects.create_user({username!r}).pk)",
    )
    return int(out.strip().splitlines()[-1])


def online_users(server: Server, redis_url: str) -> set[str]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return set(client.hkeys("{" + server.prefix + "}:online"))


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition still false after {timeout} s")
        await asyncio.sleep(0.05)


async def test_a_bad_token_gets_http_403_from_a_real_server(server: Server) -> None:
    with pytest.raises(InvalidStatus) as excinfo:
        async with ws_connect(
            f"ws://127.0.0.1:{server.port}/ws/user/",
            subprotocols=["access_token", "not-a-token"],  # type: ignore[list-item]
            open_timeout=10,
        ):
            pass
    assert excinfo.value.response.status_code == 403


async def test_browser_style_subprotocol_handshake(server: Server, redis_url: str) -> None:
    user_id = create_user(server, "carol")
    async with ws_connect(
        f"ws://127.0.0.1:{server.port}/ws/user/",
        subprotocols=["access_token", make_token(user_id)],  # type: ignore[list-item]
        open_timeout=10,
    ) as ws:
        # The server picks "access_token" and never echoes the token back.
        assert ws.subprotocol == "access_token"
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "access_token"
        assert online_users(server, redis_url) == {str(user_id)}
    await wait_until(lambda: online_users(server, redis_url) == set())


@pytest.mark.parametrize("server", ASGI_SERVERS, indirect=True)
async def test_sockets_dropped_mid_handshake_leak_no_presence(
    server: Server, redis_url: str
) -> None:
    """Clients that vanish right after connecting (the churn that leaks in other packages)."""
    user_id = create_user(server, "dave")
    url = f"ws://127.0.0.1:{server.port}/ws/chatty/"
    opened = 0
    for _ in range(60):
        ws = await ws_connect(
            url,
            subprotocols=["access_token", make_token(user_id)],
            open_timeout=10,  # type: ignore[list-item]
        )
        opened += 1
        ws.transport.abort()  # no close frame: the server sees the TCP connection die
    assert opened == 60
    await wait_until(lambda: online_users(server, redis_url) == set(), timeout=20)
