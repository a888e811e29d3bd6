"""The package under a real ASGI server (uvicorn) with real WebSocket clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from .servers import free_port, wait_for_port
from .tokens import make_token

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """``uvicorn tests.asgi:application`` on a free loopback port, with its own SQLite DB."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.port = free_port()
        self.prefix = f"srv-{uuid.uuid4().hex[:10]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "REDIS_URL": redis_url,
            "PRESENCE_TEST_KEY_PREFIX": self.prefix,
            "PYTHONPATH": str(ROOT),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def start(self) -> None:
        self.manage("migrate", "--verbosity", "0")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=self.env,
            cwd=ROOT,
        )
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[Server]:
    instance = Server(tmp_path, redis_url)
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
