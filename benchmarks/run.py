#!/usr/bin/env python3
"""Benchmark presence against a bare Channels consumer and the alternatives.

    benchmarks/.venv/bin/python benchmarks/run.py --rounds 3     # the full run
    python benchmarks/run.py --smoke                              # under a minute

See docs/performance.md for what each number means. Variants (``--variants``):

- ``bare``: token auth (one indexed SELECT), accept, nothing else: the yardstick.
- ``package``: the bare consumer plus this package's ``UserOnlineStatusMixin``.
- ``user``: the package's ready ``ws/user/`` consumer (presence, groups, messaging).
- ``peer``: django-channels-presence 1.0 from PyPI, as its README uses it (needs the
  benchmark's virtualenv, see docs/performance.md).
- ``original``: the original app's design: SADD, then SCARD, then a DB write.
- ``bare-cheap``: the bare consumer behind a cheap authentication (the user id in the
  ``Sec-WebSocket-Protocol`` header, one indexed SELECT, no JWT decode): the yardstick of
  the ``-cheap`` variants, so that the package's own work is not hidden behind a JWT decode.
- ``package-cheap``: ``bare-cheap`` plus the mixin, with one ``user_online``/``user_offline``
  receiver doing a ``group_send`` (issue 17).

Each round runs every variant on a fresh uvicorn (one worker), the same Redis and the same
PostgreSQL database, in an order rotated per round; the table shows medians over rounds,
ratios to ``bare`` and the spread (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
import procs

SECRET_KEY = "bench-secret-key-that-is-long-enough-for-hs256-signatures-0123456789abcdef"
RESULTS = procs.BENCH_DIR / "results"
PHASE_TIMEOUT = 300.0
STUCK_AFTER = 10.0
ALL_VARIANTS = ("bare", "package", "user", "peer", "original", "bare-cheap", "package-cheap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="bare,package,peer,original")
    parser.add_argument("--users", type=int, default=200, help="users in the ramp")
    parser.add_argument("--tabs", type=int, default=4, help="sockets per user in the ramp")
    parser.add_argument("--batch", type=int, default=100, help="sockets opened at once")
    parser.add_argument("--cycles", type=int, default=1000, help="churn cycles")
    parser.add_argument("--in-flight", type=int, default=50, help="churn cycles at once")
    parser.add_argument("--idle-sockets", type=int, default=10000, help="0: skip")
    parser.add_argument("--idle-variants", default="bare,package")
    parser.add_argument(
        "--idle-ws-ping-intervals",
        default="20,0",
        help="uvicorn --ws-ping-interval values to hold the idle sockets with (20: uvicorn's "
        "default; 0: no pings, which shows the package's own idle cost)",
    )
    parser.add_argument("--broadcast-sockets", type=int, default=1000, help="0: skip")
    parser.add_argument("--online-ids", type=int, default=10000, help="0: skip")
    parser.add_argument("--profile", action="store_true", help="py-spy the package's churn")
    parser.add_argument(
        "--profile-phase",
        choices=("churn", "open"),
        default="churn",
        help="with --profile: the phase to profile (the churn, or the ramp's opens)",
    )
    parser.add_argument(
        "--profile-variant",
        help="with --profile: the variant to profile (default: the package's own)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin URL of the PostgreSQL server; 'none' for SQLite",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--server-patch",
        type=Path,
        help="a Python file every server runs at start (to measure a change to the package)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a small run (bare and package, 1 round, no extras) for the test suite",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.users, args.tabs, args.batch = 1, 20, 4, 20
        args.cycles, args.in_flight = 100, 10
        args.idle_sockets = args.broadcast_sockets = args.online_ids = 0
        if "--variants" not in (argv if argv is not None else sys.argv):
            args.variants = "bare,package"
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(ALL_VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose among {ALL_VARIANTS}")
    for variant in args.variants:
        if yardstick(variant) not in args.variants:
            parser.error(f"{variant!r} needs its yardstick {yardstick(variant)!r} in --variants")
    for name in ("rounds", "users", "tabs", "batch", "cycles", "in_flight"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def postgres_reachable(url: str) -> bool:
    """Whether the PostgreSQL server at ``url`` answers."""
    if url == "none":
        return False
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


def yardstick(variant: str) -> str:
    """The bare variant ``variant`` is compared with: ``bare-cheap`` for the cheap-auth ones."""
    return "bare-cheap" if variant.endswith("-cheap") else "bare"


def is_bare(variant: str) -> bool:
    """Whether ``variant`` is a yardstick (no presence events to count)."""
    return variant in ("bare", "bare-cheap")


def token(user_id: int) -> str:
    """An access token for ``user_id``, valid for a day."""
    payload = {"user_id": user_id, "exp": int(time.time()) + 86400, "token_type": "access"}
    return jwt.encode(payload, SECRET_KEY, algorithm="HS256")


def versions(database: procs.Database, redis_url: str) -> dict[str, str]:
    """Versions of everything measured."""
    import redis

    found = {"python": platform.python_version()}
    for dist in (
        "django-user-presence",
        "Django",
        "channels",
        "channels-redis",
        "redis",
        "uvicorn",
        "websockets",
        "psycopg",
        "PyJWT",
        "django-channels-presence",
    ):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    with redis.Redis.from_url(redis_url) as client:
        found["redis-server"] = str(client.info("server")["redis_version"])
    found["database"] = database.version()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=procs.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=procs.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        found["commit"] = commit + (" (src modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        found["commit"] = "unknown"
    return found


def machine() -> dict[str, Any]:
    """CPU count and load."""
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


# -- one variant, one round -----------------------------------------------------------------


class Run:
    """Everything one benchmark run shares: services, users, tokens, parameters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis = procs.RedisProcess()
        admin = args.postgres if postgres_reachable(args.postgres) else None
        self.database = procs.Database(admin)
        self.user_ids: list[int] = []
        self.tokens: list[str] = []

    # Users: [0, users) ramp; then churn; then warmup. The idle and broadcast sockets reuse
    # users from 0 on, one socket each (everyone is offline again by then).
    @property
    def ramp_users(self) -> list[int]:
        return self.user_ids[: self.args.users]

    @property
    def churn_users(self) -> list[int]:
        start = self.args.users
        return self.user_ids[start : start + self.args.cycles]

    @property
    def warmup_users(self) -> list[int]:
        start = self.args.users + self.args.cycles
        return self.user_ids[start : start + 20]

    def user_count(self) -> int:
        return max(
            self.args.users + self.args.cycles + 20,
            self.args.idle_sockets,
            self.args.broadcast_sockets,
        )

    def setup(self) -> None:
        self.redis.start()
        self.database.create()
        env = procs.server_env("bare", self.database.url, self.redis.url)
        out = subprocess.run(
            [sys.executable, "-m", "benchproject.setup_db", str(self.user_count())],
            env=env,
            cwd=procs.BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"Database setup failed:\n{out.stderr[-3000:]}")
        self.user_ids = json.loads(out.stdout.strip().splitlines()[-1])
        self.jwt_tokens_by_id = {uid: token(uid) for uid in self.user_ids}
        # The cheap-auth variants read the user id where the JWT ones read the token.
        self.cheap_tokens_by_id = {uid: str(uid) for uid in self.user_ids}
        self.tokens_by_id = self.jwt_tokens_by_id
        self.database.connect()

    def teardown(self) -> None:
        self.redis.stop()
        self.database.drop()

    def fresh_state(self) -> None:
        import redis

        with redis.Redis.from_url(self.redis.url) as client:
            client.flushall()
            client.config_resetstat()
        self.database.reset_state()

    def server(
        self, variant: str, ws_ping_interval: float | None = None, **env: str
    ) -> procs.Server:
        self.fresh_state()
        cheap = variant.endswith("-cheap")
        self.tokens_by_id = self.cheap_tokens_by_id if cheap else self.jwt_tokens_by_id
        if self.args.server_patch:
            env["BENCH_SERVER_PATCH"] = str(self.args.server_patch.resolve())
        return procs.Server(
            variant, self.database.url, self.redis.url, ws_ping_interval, **env
        ).start()


def _phase_end(client_done: float, server_at: float) -> float:
    return max(client_done, server_at)


async def _poll(server: procs.Server, condition: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        stats = await asyncio.to_thread(server.stats)
        if condition(stats):
            return stats
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.variant}: not true after {PHASE_TIMEOUT} s: {what}")
        await asyncio.sleep(0.05)


async def _settle(server: procs.Server, stuck_before: int) -> tuple[dict[str, Any], int]:
    """Wait until the server cleaned up every closed socket; return its stats and how many
    consumers are stuck (never returned although their client closed).

    A consumer counts as stuck when nothing finished for ``STUCK_AFTER`` seconds. This
    happens on Python 3.11 with channels_redis 4.3: cancelling the layer's receive after a
    disconnect sometimes never completes (see docs/performance.md).
    """
    deadline = time.monotonic() + PHASE_TIMEOUT
    last_finished, last_progress = -1, time.monotonic()
    while True:
        stats = await asyncio.to_thread(server.stats)
        if stats["active"] <= stuck_before:
            return stats, stats["active"]
        if stats["finished"] != last_finished:
            last_finished, last_progress = stats["finished"], time.monotonic()
        elif time.monotonic() - last_progress > STUCK_AFTER:
            return stats, stats["active"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.variant}: sockets still open after {PHASE_TIMEOUT} s")
        await asyncio.sleep(0.05)


async def _settled_events(
    server: procs.Server, stats: dict[str, Any], kind: str, users: list[int]
) -> dict[str, Any]:
    """Stats once every one of ``users`` has a ``kind`` event, or none came for 1 s.

    A package may send its events after the socket's cleanup (batched side effects).
    """
    wanted = {str(u) for u in users}

    def count(stats: dict[str, Any]) -> int:
        return sum(1 for u in stats[kind] if u in wanted)

    deadline = time.monotonic() + 5.0
    last, last_change = count(stats), time.monotonic()
    while count(stats) < len(wanted) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        stats = await asyncio.to_thread(server.stats)
        if count(stats) != last:
            last, last_change = count(stats), time.monotonic()
        elif time.monotonic() - last_change > 1.0:
            break
    return stats


async def _db_agrees(run: Run, expected: int, bound: float = 1.0) -> tuple[int, float | None]:
    """The DB's online count, polled for up to ``bound`` s until it is ``expected``.

    Returns the last count and how long it took to agree (None if it never did).
    """
    start = time.monotonic()
    while True:
        count = run.database.online_count()
        waited = time.monotonic() - start
        if count == expected:
            return count, waited
        if waited > bound:
            return count, None
        await asyncio.sleep(0.02)


def _events(stats: dict[str, Any], users: list[int], kind: str) -> dict[str, int]:
    counts = Counter({int(k): v for k, v in stats[kind].items()})
    return {
        "total": sum(counts.values()),
        "lost": sum(1 for u in users if counts[u] == 0),
        "duplicated": sum(counts[u] - 1 for u in users if counts[u] > 1),
        "foreign": sum(v for u, v in counts.items() if u not in set(users)),
    }


def _redis_delta(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(_redis_commands(before, after).values())


def _redis_commands(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {
        k: after[k] - before.get(k, 0) for k in after if k not in ("info", "config|resetstat")
    }
    return {k: v for k, v in delta.items() if v}


async def measure_variant(run: Run, variant: str, profile: str | None = None) -> dict[str, Any]:
    """Ramp open, ramp close and churn against a fresh server of ``variant``.

    ``profile``: a phase (``churn``, ``open``) to record with py-spy.
    """
    args = run.args
    server = run.server(variant)
    url = server.ws_url
    meter = procs.CpuMeter(server.pid, run.redis.process.pid, run.database)  # type: ignore[union-attr]
    result: dict[str, Any] = {"variant": variant}
    try:
        # Warm up code paths, pools and the DB connection; then forget it.
        warm = await load.churn(url, [run.tokens_by_id[u] for u in run.warmup_users], 10)
        stats, stuck = await _settle(server, 0)
        if not is_bare(variant):
            await _settled_events(server, stats, "offline", run.warmup_users)
        if warm.failures:
            raise RuntimeError(f"{variant}: warmup failed: {warm.failures[:3]}")
        result["stuck_warmup"] = stuck
        await asyncio.to_thread(server.reset)
        await asyncio.sleep(0.3)
        rss_before = procs.rss_kib(server.pid)

        # Ramp open: user k's tabs in the same batch, so they race each other.
        ramp_tokens = [run.tokens_by_id[u] for u in run.ramp_users for _ in range(args.tabs)]
        expected = len(ramp_tokens)
        spy = start_profiler(server.pid, f"{variant}-open") if profile == "open" else None
        meter.mark()
        cmds = procs.redis_command_calls(run.redis.url)
        start = time.time()
        opened = await load.open_many(url, ramp_tokens, args.batch)
        stats = await _poll(
            server, lambda s: s["connected"] >= len(opened.sockets), "ramp connects done"
        )
        seconds = _phase_end(opened.done_at, stats["last_connected_at"]) - start
        if not is_bare(variant):
            stats = await _settled_events(server, stats, "online", run.ramp_users)
        cpu = meter.elapsed()
        if spy is not None:
            result["profile"] = stop_profiler(*spy)
        result["open"] = {
            "seconds": seconds,
            "rate": len(opened.sockets) / seconds,
            "cpu": cpu,
            "cpu_ms_per_conn": cpu["total"] * 1000 / expected,
            "redis_commands": _redis_delta(cmds, procs.redis_command_calls(run.redis.url)),
            "failures": opened.failures[:5],
            "failed": len(opened.failures),
        }
        result["events_open"] = _events(stats, run.ramp_users, "online")
        result["db_online_after_open"], result["db_lag_open"] = await _db_agrees(
            run, len(run.ramp_users)
        )
        await asyncio.sleep(0.5)
        rss_open = procs.rss_kib(server.pid)
        result["rss_kib_per_socket"] = (rss_open - rss_before) / max(1, len(opened.sockets))

        # Ramp close: until the server has cleaned up every socket.
        meter.mark()
        cmds = procs.redis_command_calls(run.redis.url)
        start = time.time()
        closed_at = await load.close_many(opened.sockets, args.batch)
        stats, stuck_close = await _settle(server, stuck)
        result["stuck_close"], stuck = stuck_close - stuck, stuck_close
        seconds = _phase_end(closed_at, stats["last_finished_at"]) - start
        if not is_bare(variant):
            stats = await _settled_events(server, stats, "offline", run.ramp_users)
        cpu = meter.elapsed()
        result["close"] = {
            "seconds": seconds,
            "rate": len(opened.sockets) / seconds,
            "cpu": cpu,
            "cpu_ms_per_conn": cpu["total"] * 1000 / expected,
            "redis_commands": _redis_delta(cmds, procs.redis_command_calls(run.redis.url)),
        }
        result["events_close"] = _events(stats, run.ramp_users, "offline")
        result["server_errors"] = stats["errors"]
        result["db_online_after_close"], result["db_lag_close"] = await _db_agrees(run, 0)

        # Churn: every cycle one user going online and offline.
        await asyncio.to_thread(server.reset)
        churn_tokens = [run.tokens_by_id[u] for u in run.churn_users]
        spy = start_profiler(server.pid, f"{variant}-churn") if profile == "churn" else None
        meter.mark()
        cmds = procs.redis_command_calls(run.redis.url)
        start = time.time()
        churned = await load.churn(url, churn_tokens, args.in_flight)
        stats, stuck_churn = await _settle(server, stuck)
        result["stuck_churn"], stuck = stuck_churn - stuck, stuck_churn
        seconds = _phase_end(churned.done_at, stats["last_finished_at"]) - start
        if not is_bare(variant):
            stats = await _settled_events(server, stats, "offline", run.churn_users)
        cpu = meter.elapsed()
        if spy is not None:
            result["profile"] = stop_profiler(*spy)
        churn_commands = _redis_commands(cmds, procs.redis_command_calls(run.redis.url))
        result["churn"] = {
            "seconds": seconds,
            "rate": churned.cycles / seconds,
            "cpu": cpu,
            "cpu_ms_per_cycle": cpu["total"] * 1000 / max(1, churned.cycles),
            "redis_commands_per_cycle": sum(churn_commands.values()) / max(1, churned.cycles),
            "redis_commands_by_name": churn_commands,
            "failed": len(churned.failures),
            "failures": churned.failures[:5],
        }
        result["events_churn"] = {
            "online": _events(stats, run.churn_users, "online"),
            "offline": _events(stats, run.churn_users, "offline"),
        }
        result["server_errors"] += stats["errors"]
        result["db_online_after_churn"], result["db_lag_churn"] = await _db_agrees(run, 0)
    finally:
        server.stop()
    log = [line for line in server.logs().splitlines() if line.strip()]
    result["server_log"] = log[-20:]
    return result


# -- profiling -------------------------------------------------------------------------------


def start_profiler(pid: int, name: str) -> tuple[subprocess.Popen[bytes], Path] | None:
    """py-spy record on ``pid`` (raw collapsed stacks), if py-spy is installed."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"profile-{name}.txt"
    process = subprocess.Popen(
        [exe, "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(path), "--gil"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    return process, path


def stop_profiler(process: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    """Stop py-spy and summarise the hottest functions."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if not path.exists():
        return {"error": "py-spy wrote nothing"}
    return summarise_profile(path)


def summarise_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Inclusive and self sample shares per function from py-spy's raw format."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # Drop the process/thread header frame py-spy puts first.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[_short(frame)] += count
        own[_short(frames[-1])] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    package = Counter({k: v for k, v in inclusive.items() if "django_presence" in k})
    return {
        "samples": total,
        "file": str(path),
        "inclusive_pct": share(inclusive),
        "self_pct": share(own),
        "package_inclusive_pct": share(package),
    }


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module/path.py)" without line numbers
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "benchmarks/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


# -- extras -----------------------------------------------------------------------------------


def _connected_at_least(count: int) -> Any:
    return lambda stats: stats["connected"] >= count


async def measure_idle(
    run: Run, variant: str, counts: list[int], profile: bool = False, ws_ping: float = 20.0
) -> dict[str, Any]:
    """Hold ``counts`` idle sockets in one server; Redis commands and CPU per interval."""
    interval = 15.0
    server = run.server(variant, ws_ping_interval=ws_ping, BENCH_HEARTBEAT_INTERVAL=str(interval))
    result: dict[str, Any] = {
        "variant": variant,
        "heartbeat_interval": interval,
        "ws_ping_interval": ws_ping,
        "levels": [],
    }
    sockets: list[Any] = []
    try:
        for count in counts:
            users = run.user_ids[len(sockets) : count]
            opened = await load.open_many(server.ws_url, [run.tokens_by_id[u] for u in users], 200)
            sockets += opened.sockets
            await _poll(server, _connected_at_least(len(sockets)), "idle sockets open")
            await asyncio.sleep(interval + 1)  # one heartbeat of the new sockets first
            window = 2 * interval
            cmds = procs.redis_command_calls(run.redis.url)
            spy = None
            if profile and count == counts[-1]:
                spy = start_profiler(server.pid, f"{variant}-idle")
            cpu0 = procs.cpu_seconds(server.pid) or 0.0
            requests = await asyncio.to_thread(procs.redis_requests, run.redis.url, window)
            cpu1 = procs.cpu_seconds(server.pid) or 0.0
            if spy is not None:
                result["profile"] = stop_profiler(*spy)
            after = procs.redis_command_calls(run.redis.url)
            per_command = _redis_commands(cmds, after)
            per_command.pop("monitor", None)
            result["levels"].append(
                {
                    "sockets": len(sockets),
                    "failed": len(opened.failures),
                    "redis_requests_per_interval": sum(requests.values()) * interval / window,
                    "redis_requests": requests,
                    "redis_commands_per_interval": sum(per_command.values()) * interval / window,
                    "redis_commands": per_command,
                    "server_cpu_pct": 100 * (cpu1 - cpu0) / window,
                    "rss_kib": procs.rss_kib(server.pid),
                }
            )
        await load.close_many(sockets, 500)
        await _settle(server, 0)
    finally:
        server.stop()
    result["server_log"] = [line for line in server.logs().splitlines() if line.strip()][-20:]
    return result


async def measure_broadcast(run: Run, sockets_count: int, repeats: int = 5) -> dict[str, Any]:
    """``broadcast_system_message`` to every ws/user/ socket against a raw group_send."""
    server = run.server("user")
    timings: dict[str, list[float]] = {"raw": [], "service": []}
    try:
        users = run.user_ids[:sockets_count]
        opened = await load.open_many(server.ws_url, [run.tokens_by_id[u] for u in users], 100)
        await _poll(
            server, lambda s: s["connected"] >= len(opened.sockets), "broadcast sockets joined"
        )
        await asyncio.sleep(0.5)
        for i in range(repeats):
            for mode in ("raw", "service") if i % 2 == 0 else ("service", "raw"):
                marker = f"m{mode}{i}x{time.time_ns()}"
                waiters = [
                    asyncio.ensure_future(load.wait_for_marker(ws, marker, 60))
                    for ws in opened.sockets
                ]
                await asyncio.sleep(0)
                start = time.perf_counter()
                await asyncio.to_thread(server.broadcast, mode, marker)
                arrivals = await asyncio.gather(*waiters)
                timings[mode].append(max(arrivals) - start)
                await asyncio.sleep(0.2)
        await load.close_many(opened.sockets, 200)
        await _settle(server, 0)
    finally:
        server.stop()
    raw = statistics.median(timings["raw"])
    service = statistics.median(timings["service"])
    return {
        "sockets": len(opened.sockets),
        "raw_ms": raw * 1000,
        "service_ms": service * 1000,
        "ratio": service / raw,
        "raw_all_ms": [round(t * 1000, 1) for t in timings["raw"]],
        "service_all_ms": [round(t * 1000, 1) for t in timings["service"]],
    }


def measure_online_ids(run: Run, n: int) -> dict[str, Any]:
    """``get_online_user_ids`` for ``n`` ids against one raw HMGET (benchproject.micro)."""
    run.fresh_state()
    env = procs.server_env("package", run.database.url, run.redis.url)
    out = subprocess.run(
        [sys.executable, "-m", "benchproject.micro", "online-ids", str(n), "50"],
        env=env,
        cwd=procs.BENCH_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    result["ratio"] = result["service_ms"] / result["raw_ms"]
    return result


# -- report -------------------------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]], path: tuple[str, ...]) -> tuple[float, float, float]:
    """Median, min and max of the value at ``path`` over rounds."""
    values = []
    for r in runs:
        value: Any = r
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values), min(values), max(values)


ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("ramp open, conn/s", ("open", "rate"), "{:.0f}"),
    ("ramp close, conn/s", ("close", "rate"), "{:.0f}"),
    ("churn, cycles/s", ("churn", "rate"), "{:.0f}"),
    ("stack CPU per cycle (server+Redis+PG), ms", ("churn", "cpu_ms_per_cycle"), "{:.2f}"),
    ("  server CPU per cycle, ms", ("churn", "cpu", "server"), "cycle"),
    ("  Redis CPU per cycle, ms", ("churn", "cpu", "redis"), "cycle"),
    ("  PostgreSQL CPU per cycle, ms", ("churn", "cpu", "postgres"), "cycle"),
    ("stack CPU per connect (ramp open), ms", ("open", "cpu_ms_per_conn"), "{:.2f}"),
    ("stack CPU per close (ramp close), ms", ("close", "cpu_ms_per_conn"), "{:.2f}"),
    ("Redis commands per churn cycle", ("churn", "redis_commands_per_cycle"), "{:.1f}"),
    ("RSS per held socket, KiB", ("rss_kib_per_socket",), "{:.1f}"),
]


def summarise(
    args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Medians, spreads and ratios to bare per row."""
    table: dict[str, dict[str, Any]] = {}
    for label, path, fmt in ROWS:
        table[label] = {}
        for variant, runs in results.items():
            if fmt == "cycle":
                scaled = [
                    {"v": r["churn"]["cpu"][path[-1]] * 1000 / max(1, args.cycles)} for r in runs
                ]
                med, low, high = median_of(scaled, ("v",))
            else:
                med, low, high = median_of(runs, path)
            table[label][variant] = {"median": med, "min": low, "max": high}
        for variant in results:
            bare = table[label][yardstick(variant)]["median"]
            cell = table[label][variant]
            cell["ratio"] = cell["median"] / bare if bare else None
    return table


def correctness(variant: str, runs: list[dict[str, Any]]) -> list[str]:
    """One line per round: events per user transition, DB state, failures."""
    lines = []
    for i, r in enumerate(runs):
        on, off = r["events_open"], r["events_close"]
        churn_on, churn_off = r["events_churn"]["online"], r["events_churn"]["offline"]
        lines.append(
            f"  round {i + 1}: ramp online {on['total']} (lost {on['lost']}, dup "
            f"{on['duplicated']}), offline {off['total']} (lost {off['lost']}, dup "
            f"{off['duplicated']}); churn online {churn_on['total']} (lost {churn_on['lost']}, "
            f"dup {churn_on['duplicated']}), offline {churn_off['total']} (lost "
            f"{churn_off['lost']}, dup {churn_off['duplicated']}); DB online after open "
            f"{r['db_online_after_open']}, after close {r['db_online_after_close']}, after "
            f"churn {r['db_online_after_churn']}; client failures "
            f"{r['open']['failed'] + r['churn']['failed']}, server errors {r['server_errors']}, "
            "consumers stuck after close "
            f"{r['stuck_warmup'] + r['stuck_close'] + r['stuck_churn']}"
        )
    return lines


def exact(run: dict[str, Any], users: int, cycles: int) -> bool:
    """Exactly one online and one offline event per user transition, DB in agreement."""
    events = [run["events_open"], run["events_close"], *run["events_churn"].values()]
    return (
        all(e["lost"] == 0 and e["duplicated"] == 0 and e["foreign"] == 0 for e in events)
        and run["events_open"]["total"] == users
        and run["events_churn"]["online"]["total"] == cycles
        and run["db_online_after_open"] == users
        and run["db_online_after_close"] == 0
        and run["db_online_after_churn"] == 0
    )


def targets(
    table: dict[str, Any],
    extras: dict[str, Any],
    results: dict[str, Any],
    args: argparse.Namespace,
) -> list[tuple[str, str, bool | None]]:
    """The issue's targets for the package variant: (target, measured, met)."""
    if "package" not in results:
        return cheap_targets(table, results, args)

    def ratio(label: str, variant: str = "package") -> float:
        return float(table[label][variant]["ratio"])

    rows: list[tuple[str, str, bool | None]] = []
    r = ratio("stack CPU per cycle (server+Redis+PG), ms")
    rows.append(("stack CPU per cycle <= 1.6x bare", f"{r:.2f}x", r <= 1.6))
    r = ratio("stack CPU per connect (ramp open), ms")
    rows.append(("stack CPU per connect <= 1.3x bare", f"{r:.2f}x", r <= 1.3))
    r = ratio("churn, cycles/s")
    rows.append(("churn >= 0.65x bare", f"{r:.2f}x", r >= 0.65))
    if "peer" in results:
        p = (
            table["churn, cycles/s"]["package"]["median"]
            / table["churn, cycles/s"]["peer"]["median"]
        )
        rows.append(("churn >= 3.5x django-channels-presence", f"{p:.2f}x", p >= 3.5))
    r = ratio("ramp open, conn/s")
    rows.append(("ramp open >= 0.85x bare", f"{r:.2f}x", r >= 0.85))
    r = ratio("ramp close, conn/s")
    rows.append(("ramp close >= 0.4x bare", f"{r:.2f}x", r >= 0.4))
    r = ratio("RSS per held socket, KiB")
    rows.append(("RSS per held socket <= 1.1x bare", f"{r:.2f}x", r <= 1.1))
    ok = all(exact(run, args.users, args.cycles) for run in results["package"])
    rows.append(
        ("one online + one offline per transition, 0 lost, 0 dup", "yes" if ok else "NO", ok)
    )
    rows += cheap_targets(table, results, args)
    idle = extras.get("idle", {}).get("package")
    if idle and len(idle["levels"]) >= 2:
        low, high = idle["levels"][0], idle["levels"][-1]
        flat = high["redis_requests_per_interval"] <= low["redis_requests_per_interval"] + 2
        rows.append(
            (
                "Redis requests per heartbeat interval flat "
                f"({low['sockets']} -> {high['sockets']} sockets)",
                f"{low['redis_requests_per_interval']:.1f} -> "
                f"{high['redis_requests_per_interval']:.1f}",
                flat,
            )
        )
        rows.append(
            (
                f"{high['sockets']} idle sockets: server < 3% of a core",
                f"{high['server_cpu_pct']:.2f}%",
                high["server_cpu_pct"] < 3,
            )
        )
    quiet = extras.get("idle_no_pings", {}).get("package")
    if quiet and quiet["levels"]:
        high = quiet["levels"][-1]
        rows.append(
            (
                f"{high['sockets']} idle sockets, uvicorn pings off: server < 3% of a core",
                f"{high['server_cpu_pct']:.2f}%",
                high["server_cpu_pct"] < 3,
            )
        )
    b = extras.get("broadcast")
    if b and "ratio" in b:
        rows.append(
            (
                f"broadcast_system_message to {b['sockets']} <= 1.2x raw group_send",
                f"{b['service_ms']:.0f} ms vs {b['raw_ms']:.0f} ms = {b['ratio']:.2f}x",
                b["ratio"] <= 1.2,
            )
        )
    o = extras.get("online_ids")
    if o and "ratio" in o:
        trips = o["service_commands"]
        rows.append(
            (
                f"get_online_user_ids({o['n']}) one round trip, <= 1.5x raw HMGET",
                f"{o['service_ms']:.2f} ms vs {o['raw_ms']:.2f} ms = {o['ratio']:.2f}x; "
                f"commands {trips}",
                o["ratio"] <= 1.5,
            )
        )
    if o and "sync_is_online_ratio" in o:
        rows.append(
            (
                "sync is_user_online() <= 1.5x a raw blocking HEXISTS, no new connection",
                f"{o['sync_is_online_us']:.0f} us vs {o['raw_sync_hexists_us']:.0f} us = "
                f"{o['sync_is_online_ratio']:.2f}x; {o['sync_new_connections']} new connections",
                o["sync_is_online_ratio"] <= 1.5 and o["sync_new_connections"] == 0,
            )
        )
        rows.append(
            (
                f"sync get_online_user_ids({o['n']}) <= 1.5x a raw blocking HMGET",
                f"{o['sync_service_ms']:.2f} ms vs {o['raw_sync_hmget_ms']:.2f} ms = "
                f"{o['sync_online_ids_ratio']:.2f}x",
                o["sync_online_ids_ratio"] <= 1.5,
            )
        )
    return rows


def cheap_targets(
    table: dict[str, Any], results: dict[str, Any], args: argparse.Namespace
) -> list[tuple[str, str, bool | None]]:
    """Issue 17's targets for ``package-cheap`` against ``bare-cheap``: (target, measured, met)."""
    if "package-cheap" not in results:
        return []

    def ratio(label: str) -> float:
        return float(table[label]["package-cheap"]["ratio"])

    rows: list[tuple[str, str, bool | None]] = []
    for label, name, limit, most in (
        ("stack CPU per cycle (server+Redis+PG), ms", "cheap auth: CPU per cycle", 1.8, True),
        ("churn, cycles/s", "cheap auth: churn", 0.55, False),
        ("ramp open, conn/s", "cheap auth: ramp open", 0.85, False),
        ("ramp close, conn/s", "cheap auth: ramp close", 0.5, False),
    ):
        r = ratio(label)
        met = r <= limit if most else r >= limit
        rows.append((f"{name} {'<=' if most else '>='} {limit}x bare", f"{r:.2f}x", met))
    ok = all(exact(run, args.users, args.cycles) for run in results["package-cheap"])
    rows.append(("cheap auth: one event per transition, DB agrees", "yes" if ok else "NO", ok))
    return rows


def render(report: dict[str, Any]) -> str:
    """The report as text (markdown tables)."""
    args = report["parameters"]
    variants = list(report["results"])
    names = {
        "bare": "bare",
        "package": "this package (mixin)",
        "user": "this package (ws/user/)",
        "peer": "django-channels-presence 1.0",
        "original": "the original app's design",
        "bare-cheap": "bare, cheap auth",
        "package-cheap": "this package (mixin), cheap auth",
    }
    out = [
        f"## Presence benchmark ({args['rounds']} rounds, medians; ratio to bare; spread min-max)",
        "",
        f"{args['users']} users x {args['tabs']} tabs = {args['users'] * args['tabs']} sockets "
        f"opened {args['batch']} at a time; churn = {args['cycles']} open-then-close cycles, "
        f"{args['in_flight']} in flight. OFFLINE_GRACE_PERIOD=0.",
        "",
        "| per run | " + " | ".join(names[v] for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for label, _, fmt in ROWS:
        cells = []
        for v in variants:
            c = report["table"][label][v]
            f = "{:.2f}" if fmt == "cycle" else fmt
            text = f.format(c["median"])
            if not is_bare(v) and c["ratio"] is not None:
                text += f" ({c['ratio']:.2f}x)"
            text += f" [{f.format(c['min'])}-{f.format(c['max'])}]"
            cells.append(text)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for v in variants:
        runs = report["results"][v]
        on = "/".join(str(r["events_open"]["total"]) for r in runs)
        off = "/".join(str(r["events_close"]["total"]) for r in runs)
        cells.append("-" if is_bare(v) else f"{on} on, {off} off")
    out.append(
        f"| online/offline events in the ramp ({args['users']} users) | "
        + " | ".join(cells)
        + " |"
    )
    cells = []
    for v in variants:
        runs = report["results"][v]
        cells.append(
            "-"
            if is_bare(v)
            else ("yes" if all(exact(r, args["users"], args["cycles"]) for r in runs) else "no")
        )
    out.append("| exactly one event per user transition, DB agrees | " + " | ".join(cells) + " |")
    out += ["", "### Correctness per round"]
    for v in variants:
        out.append(f"- {names[v]}:")
        out += correctness(v, report["results"][v])
    extras = report["extras"]
    if extras:
        out += ["", "### Extras"]
        idles = [*extras.get("idle", {}).items(), *extras.get("idle_no_pings", {}).items()]
        for variant, idle in idles:
            for level in idle["levels"]:
                out.append(
                    f"- idle, {names[variant]}, uvicorn pings every "
                    f"{idle.get('ws_ping_interval', 20):g} s: {level['sockets']} sockets: "
                    f"{level['redis_requests_per_interval']:.1f} Redis requests per "
                    f"{idle['heartbeat_interval']:.0f} s heartbeat interval "
                    f"({level['redis_requests']}; "
                    f"{level['redis_commands_per_interval']:.0f} commands counting those run "
                    f"inside scripts), server CPU {level['server_cpu_pct']:.2f}% "
                    f"of a core, RSS {level['rss_kib'] / 1024:.0f} MiB, "
                    f"failed opens {level['failed']}"
                )
        if "broadcast" in extras:
            b = extras["broadcast"]
            out.append(f"- broadcast to {b.get('sockets')} ws/user/ sockets: {b}")
        if "online_ids" in extras:
            out.append(f"- get_online_user_ids: {extras['online_ids']}")
    if report["targets"]:
        out += [
            "",
            "### Targets (this package's mixin variant)",
            "",
            "| target | measured | met |",
            "|---|---|---|",
        ]
        for name, measured, met in report["targets"]:
            out.append(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    profile = report.get("profile")
    if profile and "inclusive_pct" in profile:
        out += [
            "",
            f"### Profile of a server: {Path(profile['file']).stem} "
            f"({profile['samples']} samples)",
        ]
        out.append(
            "Inclusive % (package frames): "
            + "; ".join(f"{n} {p}%" for n, p in profile["package_inclusive_pct"][:12])
        )
        out.append(
            "Self % (all frames): " + "; ".join(f"{n} {p}%" for n, p in profile["self_pct"][:15])
        )
    out += [
        "",
        "### Versions and machine",
        "",
        "```",
        json.dumps(report["versions"], indent=1),
        f"machine at start: {report['machine_start']}",
        f"machine at end: {report['machine_end']}",
        f"wall time: {report['wall_seconds']:.0f} s",
        "```",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the report; return 0, or 1 when something failed."""
    args = parse_args(argv)
    # Stopped from outside (a timeout): still stop the servers and drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if "peer" in args.variants:
        try:
            importlib.metadata.version("django-channels-presence")
        except importlib.metadata.PackageNotFoundError:
            print(
                "django-channels-presence is not installed in this Python; run the benchmark "
                "with benchmarks/.venv/bin/python (see docs/performance.md) or drop 'peer' "
                "from --variants.",
                file=sys.stderr,
            )
            return 2
    began = time.time()
    machine_start = machine()
    run = Run(args)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    extras: dict[str, Any] = {}
    profile = None
    try:
        run.setup()
        report_versions = versions(run.database, run.redis.url)
        for round_index in range(args.rounds):
            shift = round_index % len(args.variants)
            order = args.variants[shift:] + args.variants[:shift]
            for variant in order:
                print(
                    f"round {round_index + 1}/{args.rounds}: {variant} ...",
                    file=sys.stderr,
                    flush=True,
                )
                results[variant].append(asyncio.run(measure_variant(run, variant)))
        # The package's own variant (package-cheap when only the cheap pair is run).
        profiled = args.profile_variant or next(
            (v for v in ("package", "package-cheap") if v in args.variants), None
        )
        if args.profile and profiled:
            phase = args.profile_phase
            print(f"profiling {profiled}'s {phase} ...", file=sys.stderr, flush=True)
            profile = asyncio.run(measure_variant(run, profiled, profile=phase)).get("profile")
        if args.idle_sockets:
            counts = sorted({min(1000, args.idle_sockets), args.idle_sockets})
            for ping in [float(p) for p in args.idle_ws_ping_intervals.split(",")]:
                key = "idle" if ping else "idle_no_pings"
                extras[key] = {}
                for variant in args.idle_variants.split(","):
                    print(
                        f"idle sockets: {variant}, uvicorn pings every {ping:g} s ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    extras[key][variant] = asyncio.run(
                        measure_idle(
                            run, variant, counts, profile=args.profile and bool(ping), ws_ping=ping
                        )
                    )
        if args.broadcast_sockets:
            print("broadcast ...", file=sys.stderr, flush=True)
            extras["broadcast"] = asyncio.run(measure_broadcast(run, args.broadcast_sockets))
        if args.online_ids:
            print("get_online_user_ids ...", file=sys.stderr, flush=True)
            extras["online_ids"] = measure_online_ids(run, args.online_ids)
    finally:
        run.teardown()
    table = summarise(args, results)
    report = {
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": report_versions,
        "machine_start": machine_start,
        "machine_end": machine(),
        "wall_seconds": time.time() - began,
        "results": results,
        "table": table,
        "extras": extras,
        "profile": profile,
    }
    report["targets"] = targets(table, extras, results, args)
    text = render(report)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"run-{stamp}.json").write_text(json.dumps(report, indent=1, default=str))
    (RESULTS / f"run-{stamp}.md").write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
