"""The processes a benchmark run owns or measures: Redis, PostgreSQL, uvicorn, and /proc.

Everything listens on 127.0.0.1. The harness starts its own redis-server and uvicorn
processes and creates (then drops) its own database on the machine's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers import (  # noqa: E402
    RedisProcess,
    free_port,
    start_process,
    stop_process,
    uvicorn_command,
    wait_for_port,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

__all__ = [
    "CpuMeter",
    "Database",
    "RedisProcess",
    "Server",
    "cpu_seconds",
    "free_port",
    "redis_command_calls",
    "rss_kib",
]


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the command name start at field 3 (state): utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"No VmRSS for pid {pid}")


def redis_command_calls(url: str) -> dict[str, int]:
    """``INFO commandstats`` of the Redis at ``url``: command -> calls so far."""
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def redis_requests(url: str, seconds: float) -> dict[str, int]:
    """Commands clients send to the Redis at ``url`` during ``seconds``, by name.

    Watched with MONITOR, which tells commands a client sent (one request each) from the
    commands a Lua script ran inside one request (``[0 lua]``), as INFO commandstats
    cannot.
    """
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    counts: dict[str, int] = {}
    buffer = b""
    deadline = time.monotonic() + seconds
    with socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=5) as sock:
        sock.sendall(b"MONITOR\r\n")
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                head, sep, command = line.partition(b"] ")
                if not sep or head.endswith(b" lua"):
                    continue  # "+OK", or a command run inside a script
                name = command.split(b" ", 1)[0].strip(b'"').decode().lower()
                counts[name] = counts.get(name, 0) + 1
    return counts


# -- PostgreSQL (or SQLite) ----------------------------------------------------------------


class Database:
    """The benchmark's database: a fresh PostgreSQL database, or a SQLite file.

    PostgreSQL backends serving it are found in ``pg_stat_activity`` so that their CPU can
    be read from ``/proc``.
    """

    def __init__(self, admin_url: str | None, name: str | None = None) -> None:
        self.admin_url = admin_url
        # One database per run, so that runs side by side (CI, a developer) never collide.
        self.name = name or f"bench_presence_{os.getpid()}"
        self._conn: Any = None
        self._tmp: str | None = None
        if admin_url is None:
            self._tmp = tempfile.mkdtemp(prefix="bench-sqlite-")
            self.url = f"sqlite:///{self._tmp}/db.sqlite3"
        else:
            base = admin_url.rsplit("/", 1)[0]
            self.url = f"{base}/{self.name}"

    @property
    def is_postgres(self) -> bool:
        """Whether this is PostgreSQL (whose CPU is measured)."""
        return self.admin_url is not None

    def create(self) -> None:
        """Create the empty database (dropping a leftover of an earlier run)."""
        if self.is_postgres:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{self.name}"')

    def connect(self) -> None:
        """Open the harness's own connection (for resets and backend pids)."""
        if self.is_postgres:
            import psycopg

            self._conn = psycopg.connect(self.url, autocommit=True)
        else:
            assert self._tmp is not None
            self._conn = sqlite3.connect(f"{self._tmp}/db.sqlite3", isolation_level=None)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` on the harness's connection; return the rows, if any."""
        cursor = self._conn.execute(sql)
        try:
            return list(cursor.fetchall())
        except Exception:  # statements without rows
            return []

    def reset_state(self) -> None:
        """Everyone offline, no django-channels-presence rows: the state before a variant."""
        self.execute("UPDATE benchapp_user SET is_online = false, last_seen = NULL")
        tables = {row[0] for row in self.tables()}
        for table in ("channels_presence_presence", "channels_presence_room"):
            if table in tables:
                self.execute(f"DELETE FROM {table}")

    def tables(self) -> list[tuple[Any, ...]]:
        """Names of the tables."""
        if self.is_postgres:
            return self.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")

    def online_count(self) -> int:
        """How many users the DB says are online."""
        return int(self.execute("SELECT count(*) FROM benchapp_user WHERE is_online")[0][0])

    def backend_pids(self) -> list[int]:
        """PostgreSQL backends connected to this database, except the harness's own."""
        if not self.is_postgres:
            return []
        rows = self.execute(
            "SELECT pid FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )
        return [int(row[0]) for row in rows]

    def version(self) -> str:
        """The server's version."""
        if self.is_postgres:
            return str(self.execute("SHOW server_version")[0][0])
        return "SQLite " + sqlite3.sqlite_version

    def drop(self) -> None:
        """Close the harness's connection and drop the database."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.is_postgres:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        elif self._tmp is not None:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)


# -- the server under test -----------------------------------------------------------------


def server_env(variant: str, db_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment of a benchmark server process (or of a Django command for it)."""
    pythonpath = os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchproject.settings",
        "BENCH_VARIANT": variant,
        "BENCH_DATABASE_URL": db_url,
        "BENCH_REDIS_URL": redis_url,
        "PYTHONPATH": pythonpath,
        **extra,
    }


class Server:
    """``uvicorn benchproject.asgi:application`` (one worker) for one variant."""

    def __init__(
        self,
        variant: str,
        db_url: str,
        redis_url: str,
        ws_ping_interval: float | None = None,
        **extra_env: str,
    ) -> None:
        self.variant = variant
        # uvicorn's --ws-ping-interval; None: uvicorn's default (20 s), 0: no pings.
        self.ws_ping_interval = ws_ping_interval
        self.port = free_port()
        self.env = server_env(variant, db_url, redis_url, **extra_env)
        self.process: subprocess.Popen[bytes] | None = None
        # The server's stdout and stderr; kept for logs() after the server stopped.
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{variant}-", suffix=".log")  # noqa: SIM115

    @property
    def pid(self) -> int:
        """The server's pid."""
        assert self.process is not None
        return self.process.pid

    @property
    def ws_url(self) -> str:
        """The variant's WebSocket endpoint."""
        return f"ws://127.0.0.1:{self.port}/ws/bench/"

    def start(self) -> Server:
        """Start uvicorn and wait until the control API answers."""
        options = ["--no-access-log", "--backlog", "4096"]
        if self.ws_ping_interval is not None:
            options += ["--ws-ping-interval", str(self.ws_ping_interval)]
        command = uvicorn_command("benchproject.asgi:application", self.port, *options)
        self.process = start_process(command, env=self.env, cwd=BENCH_DIR, log=self.log)
        wait_for_port(self.port, timeout=60)
        self.stats()
        return self

    def _request(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return dict(json.loads(response.read()))

    def stats(self) -> dict[str, Any]:
        """The server's counters (see benchproject/stats.py)."""
        return self._request("GET", "/bench/stats")

    def reset(self) -> None:
        """Reset the server's counters."""
        self._request("POST", "/bench/reset")

    def broadcast(self, mode: str, text: str) -> dict[str, Any]:
        """Make the server broadcast ``text`` (``mode``: service or raw)."""
        return self._request("POST", f"/bench/broadcast?mode={mode}&text={text}")

    def logs(self) -> str:
        """What the server printed (warnings and errors)."""
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        """Stop uvicorn (SIGTERM, then SIGKILL after 15 s)."""
        stop_process(self.process, timeout=15)
        self.process = None


@dataclass
class CpuMeter:
    """CPU seconds of the stack (server, Redis, PostgreSQL backends) between two marks."""

    server_pid: int
    redis_pid: int
    database: Database
    start: dict[str, dict[int, float]] = field(default_factory=dict)

    def _read(self) -> dict[str, dict[int, float]]:
        groups = {
            "server": [self.server_pid],
            "redis": [self.redis_pid],
            "postgres": self.database.backend_pids(),
        }
        result: dict[str, dict[int, float]] = {}
        for name, pids in groups.items():
            result[name] = {}
            for pid in pids:
                value = cpu_seconds(pid)
                if value is not None:
                    result[name][pid] = value
        return result

    def mark(self) -> None:
        """Start measuring now."""
        self.start = self._read()

    def elapsed(self) -> dict[str, float]:
        """CPU seconds used by each part since :meth:`mark`, and their ``total``.

        A PostgreSQL backend that appeared meanwhile counts from zero (its whole life).
        """
        end = self._read()
        used = {
            name: sum(v - self.start.get(name, {}).get(pid, 0.0) for pid, v in pids.items())
            for name, pids in end.items()
        }
        used["total"] = sum(used.values())
        return used


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Not true after {timeout} s: {what}")
        time.sleep(interval)
