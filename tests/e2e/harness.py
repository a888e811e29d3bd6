"""The example project under real uvicorn, and Debian's Chromium driven by Playwright.

Nothing here downloads a browser: the tests use the system's Chromium (Debian's
``chromium`` package) and fail, never skip, with the install command when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from ..servers import free_port, kill_process, start_process, stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE_DIR = ROOT / "example_project"

#: Chromium flags for a headless run in a container, with no background traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

NO_CHROMIUM = (
    "The browser tests need Chromium and found none at {path!r}. Install Debian's package "
    "with `apt-get update && apt-get install -y chromium` (Ubuntu: a chromium deb, not the "
    "snap), or set CHROMIUM_PATH to a Chromium or Chrome binary. Do not run "
    "`playwright install`: the tests drive the system's browser."
)
NO_PLAYWRIGHT = (
    "The browser tests need Playwright for Python: `pip install playwright` (the Python "
    "package only; the browser comes from the system, see CHROMIUM_PATH)."
)

#: Timings of the example server under test: short, so that offline shows within seconds.
GRACE_PERIOD = 2.0
HEARTBEAT_INTERVAL = 0.5
CONNECTION_TTL = 6.0

DEMO_PASSWORDS = {"doctor": "doctor-demo", "patient": "patient-demo", "admin": "admin-demo"}


def chromium_path() -> str:
    """The Chromium binary to drive: ``CHROMIUM_PATH``, else Debian's ``/usr/bin/chromium``."""
    path = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        found = shutil.which(path)
        if found is None:
            raise FileNotFoundError(NO_CHROMIUM.format(path=path))
        path = found
    return path


class ExampleServer:
    """``manage.py demo`` (migrate, seed, uvicorn) on a free loopback port.

    Each server has its own SQLite file unless given one to share; with ``redis_url`` it
    runs on channels_redis and the Redis presence backend under private key prefixes.
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        name: str = "server",
        database: Path | None = None,
        redis_url: str | None = None,
        prefix: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.name = name
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"{name}-{self.port}.log"
        self.database = database or tmp_path / "example.sqlite3"
        self.redis_url = redis_url
        self.prefix = prefix or f"e2e-{uuid.uuid4().hex[:10]}"
        #: More environment variables (other timings: ``PRESENCE_IDLE_AFTER``...).
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        #: Whether it has served once: a restart must keep its port.
        self.started_once = False

    def env(self) -> dict[str, str]:
        """The server's environment: the example's settings, short timings, its own DB."""
        env = {
            key: value
            for key, value in os.environ.items()
            # The test process's own settings must not leak into the example's.
            if key not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "PYTHONPATH")
        }
        env.update(
            DJANGO_SETTINGS_MODULE="example_project.settings",
            EXAMPLE_DATABASE_PATH=str(self.database),
            EXAMPLE_INSECURE_FAST_PASSWORD_HASHING="1",
            PRESENCE_OFFLINE_GRACE_PERIOD=str(GRACE_PERIOD),
            PRESENCE_HEARTBEAT_INTERVAL=str(HEARTBEAT_INTERVAL),
            PRESENCE_CONNECTION_TTL=str(CONNECTION_TTL),
            PYTHONUNBUFFERED="1",
        )
        if self.redis_url:
            env.update(
                REDIS_URL=self.redis_url,
                PRESENCE_KEY_PREFIX=self.prefix,
                EXAMPLE_CHANNELS_PREFIX=self.prefix,
            )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> ExampleServer:
        """Run ``manage.py demo --port <port>`` and wait until it serves the login page.

        The port was free when chosen, but another process (an outgoing connection's
        ephemeral port) may take it before the server binds it: the first start then
        moves to another free port, up to three times. A restart keeps its port (the
        pages reconnect to it).
        """
        for attempt in range(3):
            try:
                self._start(timeout)
            except RuntimeError as e:
                if self.started_once or attempt == 2 or "address already in use" not in str(e):
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.log_path = self.log_path.with_name(f"{self.name}-{self.port}.log")
            else:
                self.started_once = True
                return self
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> None:
        command = [
            sys.executable,
            str(EXAMPLE_DIR / "manage.py"),
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.process = process = start_process(
            command, env=self.env(), cwd=EXAMPLE_DIR, log=self.log_path
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if process.poll() is not None:  # (another process may answer on the port)
                    raise RuntimeError(f"the server exited with code {process.returncode}")
                try:
                    with urllib.request.urlopen(self.url + "/login/", timeout=5) as response:
                        if response.status == 200:
                            return
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.1)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"The example server did not start:\n{self.log_tail()}") from e

    def stop(self) -> None:
        """Stop the server the way an orchestrator does (SIGTERM), then SIGKILL if stuck."""
        stop_process(self.process, timeout=15)
        self.process = None

    def kill(self) -> None:
        """Crash the server (SIGKILL): its sockets drop with no close handshake."""
        kill_process(self.process, timeout=15)
        self.process = None

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the server's output, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"


def log_in(browser: Any, server: ExampleServer, username: str, **context_options: Any) -> Any:
    """A new browser context (its own cookies: a separate person) logged in as ``username``.

    Returns the page, on the dashboard.
    """
    options = {"viewport": {"width": 1100, "height": 720}, "timezone_id": "UTC", **context_options}
    context = browser.new_context(**options)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(server.url + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", DEMO_PASSWORDS[username])
    page.click("form button[type=submit]")
    page.wait_for_url(server.url + "/")
    return page


def wait_connected(page: Any) -> None:
    """Wait until the page's ws/user/ connection is open."""
    page.wait_for_selector("#connection[data-state=open]")


def person_row(page: Any, user_id: int, online: bool) -> str:
    """Selector of a dashboard row in the given state."""
    return f'tr.person[data-user-id="{user_id}"][data-online="{"true" if online else "false"}"]'
