"""SIGTERM stops a server within a bounded time, whatever its clients do.

A deploy waits for the old process to exit. Clients that never read (a frozen tab, a
half-open TCP connection, an attacker) never answer the server's close frame; the
server must exit all the same, within ``SHUTDOWN_BOUND`` seconds, on both channels_redis
layers, under uvicorn (run as a project runs it: no ``--timeout-graceful-shutdown``) and
daphne. Under uvicorn its connections are unregistered on the way out: a user with no
other server goes offline after the grace period (daphne does not run the consumers'
cleanup; docs/compatibility.md says what that means).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from .servers import AsgiServer, kill_process
from .test_server_matrix import (
    Database,
    database,  # noqa: F401 (fixtures, requested by name)
    layer,  # noqa: F401
    layer_config,
    server_kind,  # noqa: F401
)
from .tokens import make_token

pytestmark = pytest.mark.server

#: Seconds from SIGTERM to the process's exit that the package promises.
SHUTDOWN_BOUND = 10.0
#: Clients that never read, per round.
SILENT_CLIENTS = 4
#: The reported case (uvicorn on RedisChannelLayer) is tried 20 times in a row; the others
#: a few times each, which bounds the suite's time.
ROUNDS = {("uvicorn", "core"): 20}
OTHER_ROUNDS = 3


def silent_client(port: int, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads again."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws/user/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: access_token, {token}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response[:200]
    return sock


def connections_of(redis_url: str, prefix: str, user_id: int) -> int:
    """How many connection records the backend holds for ``user_id``."""
    with redis.Redis.from_url(redis_url) as client:
        return int(client.hlen("{" + prefix + "}:u:" + str(user_id)))


@pytest.fixture
def prefixes(redis_url: str) -> Iterator[tuple[str, str]]:
    """A presence key prefix and a channel-layer prefix of this test, deleted after it."""
    key_prefix, layer_prefix = f"sd-{uuid.uuid4().hex[:10]}", f"sdl-{uuid.uuid4().hex[:10]}"
    yield key_prefix, layer_prefix
    with redis.Redis.from_url(redis_url) as client:
        for pattern in ("{" + key_prefix + "}:*", layer_prefix + "*"):
            keys = list(client.scan_iter(match=pattern))
            if keys:
                client.delete(*keys)


def test_sigterm_exits_promptly_with_clients_that_never_read(
    server_kind: str,  # noqa: F811
    layer: str,  # noqa: F811
    database: Database,  # noqa: F811
    redis_url: str,
    prefixes: tuple[str, str],
) -> None:
    key_prefix, layer_prefix = prefixes
    rounds = ROUNDS.get((server_kind, layer), OTHER_ROUNDS)
    token = make_token(database.alice)
    took: list[float] = []
    for _ in range(rounds):
        server = AsgiServer(
            database_url=database.url,
            redis_url=redis_url,
            key_prefix=key_prefix,
            server=server_kind,
            channel_layers={"default": layer_config(layer, redis_url, layer_prefix)},
            presence={"OFFLINE_GRACE_PERIOD": 0, "HEARTBEAT_INTERVAL": 1, "CONNECTION_TTL": 3},
        ).start()
        clients: list[socket.socket] = []
        try:
            clients = [silent_client(server.port, token) for _ in range(SILENT_CLIENTS)]
            deadline = time.monotonic() + 10
            while connections_of(redis_url, key_prefix, database.alice) < SILENT_CLIENTS:
                assert time.monotonic() < deadline, "the clients were not registered"
                time.sleep(0.02)
            process: Any = server.process
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SHUTDOWN_BOUND)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"{server_kind} on {layer} was still running {SHUTDOWN_BOUND} s after "
                    f"SIGTERM (round {len(took) + 1} of {rounds})"
                )
            took.append(time.monotonic() - started)
            if server_kind == "uvicorn":
                # The consumers ran their cleanup on the way out (grace 0: user offline).
                # daphne drops its sockets without cancelling the application (see
                # docs/compatibility.md): its leases expire as after a crash.
                assert connections_of(redis_url, key_prefix, database.alice) == 0
        finally:
            for client in clients:
                client.close()
            kill_process(server.process)
    print(f"\n{server_kind}/{layer}: SIGTERM to exit, {rounds} rounds: max {max(took):.2f} s")
