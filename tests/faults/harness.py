"""Real processes for the fault suite: a database, Redis servers, uvicorn servers, clients.

Everything listens on 127.0.0.1 and belongs to the test that started it: no fault test
touches the Redis or the database the rest of the suite uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import redis

from ..servers import (
    RedisProcess,
    free_port,
    kill_process,
    start_process,
    uvicorn_command,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent.parent

#: The signing key of tests/faults/settings.py (tokens are minted in the test process).
SECRET_KEY = "faults-secret-key-that-is-long-enough-for-hs256-signatures-0123456789"

POSTGRES_URL = os.environ.get("FAULTS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def token_for(user_id: Any, *, lifetime: float = 3600, **claims: Any) -> str:
    """A valid access token for ``user_id`` for the fault servers."""
    payload = {"user_id": user_id, "exp": int(time.time() + lifetime), **claims}
    return jwt.encode(payload, SECRET_KEY, algorithm="HS256")


def _poll(condition: Callable[[], Any], start: float, timeout: float, what: str) -> float | None:
    """One poll: the seconds since ``start`` if ``condition`` holds, None if it may later.

    Raises TimeoutError once ``timeout`` s have passed since ``start`` without it holding.
    """
    if condition():
        return time.monotonic() - start
    if time.monotonic() - start > timeout:
        raise TimeoutError(f"Not true after {timeout:.1f} s: {what or condition}")
    return None


def wait_until(
    condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = ""
) -> float:
    """Poll ``condition`` until truthy; return the seconds it took, or raise on timeout."""
    start = time.monotonic()
    while (took := _poll(condition, start, timeout, what)) is None:
        time.sleep(interval)
    return took


async def await_until(
    condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = ""
) -> float:
    """Async form of :func:`wait_until`."""
    start = time.monotonic()
    while True:
        took = _poll(condition, start, timeout, what)
        if took is not None:
            return took
        await asyncio.sleep(interval)


# -- database ------------------------------------------------------------------------------


class FaultDatabase:
    """A database created for the fault suite, shared by its server processes.

    PostgreSQL when the server at ``FAULTS_POSTGRES_URL`` answers (a new database is
    created and dropped), else a SQLite file in a temporary directory.
    """

    def __init__(self) -> None:
        self.name = f"presence_faults_{uuid.uuid4().hex[:10]}"
        self.tmp = tempfile.mkdtemp(prefix="presence-faults-")
        self.kind = "sqlite"
        self.url = f"sqlite:///{self.tmp}/db.sqlite3"
        try:
            import psycopg

            with psycopg.connect(
                _psycopg_dsn(POSTGRES_URL), autocommit=True, connect_timeout=3
            ) as c:
                c.execute(f'CREATE DATABASE "{self.name}"')
            self.kind = "postgresql"
            self.url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + self.name
        except Exception:  # no PostgreSQL here: the SQLite file serves the same purpose
            pass
        self.user_ids: list[int] = []
        self.inactive_id: int = 0

    def setup(self, users: int, env: dict[str, str]) -> None:
        """Migrate and create the users (in a subprocess with the servers' settings)."""
        result = subprocess.run(
            [sys.executable, "-m", "tests.faults.dbsetup", str(users)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"dbsetup failed:\n{result.stderr[-3000:]}")
        data = json.loads(result.stdout.strip().splitlines()[-1])
        self.user_ids = data["users"]
        self.inactive_id = data["inactive"]

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``%s`` placeholders) and return the rows."""
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(_psycopg_dsn(self.url), autocommit=True) as c:
                cursor = c.execute(sql, tuple(params))
                return list(cursor.fetchall()) if cursor.description else []
        with contextlib.closing(sqlite3.connect(f"{self.tmp}/db.sqlite3", timeout=30)) as c:
            cursor = c.execute(sql.replace("%s", "?"), tuple(params))
            rows = list(cursor.fetchall())
            c.commit()
            return rows

    def online_ids(self) -> set[int]:
        """Ids of the users whose ``is_online`` column is true."""
        return {row[0] for row in self.query("SELECT id FROM testapp_user WHERE is_online")}

    def reset_online(self) -> None:
        """Mark everyone offline (between tests, each with a fresh Redis)."""
        self.query("UPDATE testapp_user SET is_online = %s", [False])

    def drop(self) -> None:
        """Drop the database (PostgreSQL) and remove the temporary directory."""
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(_psycopg_dsn(POSTGRES_URL), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


# -- Redis ---------------------------------------------------------------------------------


class RestartableRedis(RedisProcess):
    """A private redis-server that can be killed and started again, empty, on its port."""

    def kill(self) -> None:
        """SIGKILL the server (its data is gone: nothing is persisted)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart_empty(self) -> None:
        """Start the server again on the same port, with no data."""
        self.dir = tempfile.mkdtemp(prefix="presence-redis-")
        self.start()


# -- uvicorn servers -----------------------------------------------------------------------


@dataclass
class Stack:
    """What the server processes of one test share: database, Redis and settings."""

    db: FaultDatabase
    redis: RestartableRedis
    events_file: Path
    ttl: float = 3.0
    heartbeat: float = 1.0
    grace: float = 0.0
    #: ``HISTORY_SIZE`` and ``UNDELIVERED_AFTER`` (None: the fallback off) of the servers.
    history_size: int = 300
    undelivered_after: float | None = 30.0
    key_prefix: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex[:8]}")
    servers: list[ServerProcess] = field(default_factory=list)

    @property
    def crash_bound(self) -> float:
        """The documented staleness bound after a crash: CONNECTION_TTL + HEARTBEAT_INTERVAL."""
        return self.ttl + self.heartbeat

    def env(self) -> dict[str, str]:
        """Environment of a server process (and of the database setup)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
        env.update(
            DJANGO_SETTINGS_MODULE="tests.faults.settings",
            FAULTS_DATABASE_URL=self.db.url,
            FAULTS_REDIS_URL=self.redis.url,
            FAULTS_KEY_PREFIX=self.key_prefix,
            FAULTS_TTL=str(self.ttl),
            FAULTS_HEARTBEAT=str(self.heartbeat),
            FAULTS_GRACE=str(self.grace),
            FAULTS_HISTORY_SIZE=str(self.history_size),
            FAULTS_UNDELIVERED_AFTER=(
                "off" if self.undelivered_after is None else str(self.undelivered_after)
            ),
            FAULTS_EVENTS_FILE=str(self.events_file),
            # FAULTS_SRC_OVERRIDE: a patched copy of src/ to try a fix against this suite.
            PYTHONPATH=os.pathsep.join(
                p for p in (os.environ.get("FAULTS_SRC_OVERRIDE", ""), str(ROOT)) if p
            ),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start_server(self, name: str) -> ServerProcess:
        """Start a uvicorn server process and wait until it accepts connections."""
        server = ServerProcess(name, self.env(), self.events_file.parent / f"{name}.log")
        server.start()
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        """Kill every server process still running."""
        for server in self.servers:
            server.kill()

    @contextlib.asynccontextmanager
    async def messaging(self) -> AsyncIterator[Any]:
        """``user_messaging_service`` of this process, configured like the servers.

        The same Redis (presence backend and channel layer) and the same delivery settings,
        so what it sends is stored, numbered and delivered as if a server had sent it. Its
        backend and channel-layer connections are closed on the way out.
        """
        from channels.layers import channel_layers as layers
        from django.test import override_settings

        from django_presence import backends
        from django_presence.services import user_messaging_service

        from .config import channel_layers, presence_settings

        with override_settings(
            DJANGO_PRESENCE=presence_settings(self.env()),
            CHANNEL_LAYERS=channel_layers(self.redis.url),
        ):
            try:
                yield user_messaging_service
            finally:
                await backends.get_backend().aclose()
                layer = layers.backends.get("default")
                if layer is not None:
                    await layer.close_pools()
        backends.reset_backend()
        layers.backends.clear()

    # -- observations ----------------------------------------------------------------------

    def redis_client(self) -> redis.Redis:
        """A sync client of this stack's Redis."""
        return redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=5)

    def backend_online(self) -> set[int]:
        """User ids the Redis backend holds online now."""
        with self.redis_client() as client:
            return {int(k) for k in client.hkeys("{" + self.key_prefix + "}:online")}

    def backend_connections(self, user_id: int) -> int:
        """How many connection records the backend holds for ``user_id``."""
        with self.redis_client() as client:
            return int(client.hlen("{" + self.key_prefix + "}:u:" + str(user_id)))

    def events(self) -> list[dict[str, Any]]:
        """Every signal the server processes sent so far, in file order."""
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines() if line]


class ServerProcess:
    """One ``uvicorn tests.faults.asgi:application`` process on a free loopback port."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``ws://`` URL of the package's ``ws/user/`` route on this server."""
        return f"ws://127.0.0.1:{self.port}/ws/user/"

    def start(self) -> None:
        """Start uvicorn; wait until it listens."""
        command = uvicorn_command(
            "tests.faults.asgi:application",
            self.port,
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",
        )
        self.process = start_process(command, env=self.env, cwd=ROOT, log=self.log_path)
        try:
            wait_for_port(self.port, timeout=60)
        except TimeoutError:
            self.kill()
            raise RuntimeError(
                f"server {self.name} did not start:\n{self.log()[-3000:]}"
            ) from None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def sigkill(self) -> None:
        """Crash the server: no disconnect handler runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def sigterm(self) -> None:
        """Ask the server to shut down gracefully (does not wait)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the process if it still runs."""
        kill_process(self.process, timeout=10)

    def log(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- clients -------------------------------------------------------------------------------


#: Every client created, so a failed test's fixtures can still close them all.
ALL_CLIENTS: list[Client] = []


class Client:
    """A WebSocket client of ``ws/user/`` that records every frame it receives."""

    def __init__(self, user_id: int, url: str) -> None:
        ALL_CLIENTS.append(self)
        self.user_id = user_id
        self.url = url
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.ws: Any = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, url: str | None = None, timeout: float = 20) -> Client:
        """Open the socket with the token in the subprotocol pair, start reading."""
        from websockets.asyncio.client import connect

        if url is not None:
            self.url = url
        self.closed = asyncio.Event()
        self.close_code = None
        self.ws = await connect(
            self.url,
            subprotocols=["access_token", token_for(self.user_id)],  # type: ignore[list-item]
            proxy=None,
            open_timeout=timeout,
            ping_interval=None,
            compression=None,
        )
        self._reader = asyncio.create_task(self._read(self.ws))
        return self

    async def _read(self, ws: Any) -> None:
        try:
            async for message in ws:
                if isinstance(message, str):
                    self.frames.append((time.monotonic(), json.loads(message)))
        except Exception:  # the socket died: that is what many tests cause on purpose
            pass
        finally:
            self.close_code = ws.close_code
            self.closed.set()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a JSON frame."""
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        """Close the socket cleanly and stop reading."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 10)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 10)

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        if self.ws is not None:
            self.ws.transport.abort()

    async def discard(self) -> None:
        """Drop the connection and wait for the reader to stop (test teardown)."""
        self.abort()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)

    def of_type(self, frame_type: str) -> list[tuple[float, dict[str, Any]]]:
        """The received frames of ``frame_type`` with their arrival times."""
        return [(t, f) for t, f in self.frames if f.get("type") == frame_type]

    async def request(self, frame: dict[str, Any], reply_type: str, timeout: float = 10) -> Any:
        """Send ``frame`` with a fresh id and wait for the reply carrying that id."""
        request_id = uuid.uuid4().hex[:8]
        await self.send({**frame, "id": request_id})

        def reply() -> Any:
            return next((f for _, f in self.frames if f.get("id") == request_id), None)

        await await_until(lambda: reply() is not None, timeout, what=f"reply to {frame}")
        found = reply()
        if found.get("type") != reply_type:
            raise AssertionError(f"{frame} was answered with {found}, not {reply_type}")
        return found


class RecoveringClient(Client):
    """A client that keeps its stream positions and recovers on reconnect, as presence.js.

    Per stream, the ``{epoch, offset}`` of the last stored frame received, or of a
    ``recovery`` frame's entry (``{epoch, since}``) when its epoch differs from the one
    known or it says ``recovered: false``. Every :meth:`connect` names the positions in the
    URL (``?since=user:<epoch>:<offset>&since=broadcast:...``), or ``?recover=1``.
    """

    def positions(self) -> dict[str, tuple[str, int]]:
        """Stream -> ``(epoch, offset)`` from every frame received so far, in order."""
        positions: dict[str, tuple[str, int]] = {}
        for _, frame in self.frames:
            if frame.get("type") == "recovery":
                for stream, info in frame["data"]["streams"].items():
                    known = positions.get(stream)
                    if known is None or known[0] != info["epoch"] or not info["recovered"]:
                        positions[stream] = (info["epoch"], int(info["since"]))
            elif isinstance(frame.get("stream"), str) and isinstance(frame.get("offset"), int):
                known = positions.get(frame["stream"])
                if known is None or known[0] != frame["epoch"] or frame["offset"] > known[1]:
                    positions[frame["stream"]] = (frame["epoch"], frame["offset"])
        return positions

    def recovery_url(self, base: str) -> str:
        """``base`` with this client's positions (only ``user`` and ``broadcast``)."""
        positions = self.positions()
        params = [
            f"since={stream}:{epoch}:{offset}"
            for stream, (epoch, offset) in positions.items()
            if stream in ("user", "broadcast")
        ]
        return base + "?" + ("&".join(params) if params else "recover=1")

    async def reconnect(self, base: str, timeout: float = 20) -> RecoveringClient:
        """Connect to ``base`` (a server's URL) from the positions reached so far."""
        await self.connect(self.recovery_url(base), timeout)
        return self


class Subscriber(Client):
    """A client that watches users through ``subscribe_presence``.

    :meth:`view` is the status of each watched user as this client would show it: the
    ``presence_state`` snapshot, updated by every later ``status_changed``.
    """

    async def subscribe(self, user_ids: list[int], timeout: float = 20) -> None:
        """Subscribe and wait for the ``presence_state`` snapshot."""
        await self.request(
            {"type": "subscribe_presence", "data": {"user_ids": user_ids}},
            "presence_state",
            timeout,
        )

    def status_changes(self, user_id: int) -> list[tuple[float, bool]]:
        """``(arrival time, is_online)`` of every ``status_changed`` about ``user_id``."""
        return [
            (t, bool(f["data"]["is_online"]))
            for t, f in self.of_type("status_changed")
            if f["data"]["user_id"] == user_id
        ]

    def view(self) -> dict[int, bool]:
        """User id -> online, as the snapshot plus the status changes say."""
        state: dict[int, bool] = {}
        for _, frame in self.frames:
            if frame.get("type") == "presence_state":
                state.update({int(k): bool(v) for k, v in frame["data"]["users"].items()})
            elif frame.get("type") == "status_changed":
                state[int(frame["data"]["user_id"])] = bool(frame["data"]["is_online"])
        return state

    def sequence(self, user_id: int) -> list[bool]:
        """Every status of ``user_id`` this client was told, snapshot first."""
        out: list[bool] = []
        for _, frame in self.frames:
            if frame.get("type") == "presence_state":
                users = frame["data"]["users"]
                if str(user_id) in users:
                    out.append(bool(users[str(user_id)]))
            elif frame.get("type") == "status_changed" and frame["data"]["user_id"] == user_id:
                out.append(bool(frame["data"]["is_online"]))
        return out
