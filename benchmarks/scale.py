#!/usr/bin/env python3
"""Presence at internet scale, simulated without sockets (issue 17).

    python benchmarks/scale.py                       # 1,000,000 connections (50-75 s)
    python benchmarks/scale.py --scale 0.01          # a quick run
    python benchmarks/scale.py --scale 0.002 --json out.json   # the test suite's smoke run

Starts its own redis-server (``tests/servers.py``'s ``RedisProcess``, never a shared one)
and drives the package's ``RedisBackend`` directly, as server processes would: N
connections (default 1,000,000) of U users (300,000) filed under P server processes (50).
Each process takes its lease with ``renew_server`` (its first call: not held, so it files
what it holds), then files its connections with one ``heartbeat(pairs, server=...)`` of
all of them (the backend stores again every pair it does not hold: that is how
connections are loaded in bulk, in chunks of 5,000 per script call). A connection filed
under a process (member of the set ``{P}:pc:<server>``) has no lease of its own: it lives
as long as its process's lease (its entry in the sorted set ``{P}:procs``). Connection ids
look like channels_redis channel names (``specific.<32 hex>!<32 hex>``), user ids are
integer keys, server names ``host:pid``. A user's connections are spread over several
processes.

Measured, with ``INFO memory``, ``INFO commandstats`` and ``SLOWLOG`` (threshold 0, so
every command and its server time are logged; only the backend's own are read):

- ``memory``: ``used_memory`` after loading minus before, per connection and per online
  user, and ``MEMORY USAGE`` of the large keys: the 50 ``pc:<server>`` sets together,
  ``procs``, ``online``, ``tseq``, ``offline``, the user hashes (estimated from 200)
  (issue 17: at most 200 B per connection).
- ``beat``: one process's beat, ``renew_server_and_sweep`` of its lease (what one process
  sends each ``HEARTBEAT_INTERVAL`` while its lease is held: its N/P connections are not
  sent), repeated: wall time, Redis requests (``EVALSHA`` calls), server time, the longest
  single call (issue 17: no Redis call over 10 ms), commands run inside the script, and
  ``held`` (True every time: the process never has to file its connections again).
- ``beat["sizes"]``: the same for a process holding 10, 10,000 and 100,000 connections
  (capped at N; fresh connection ids of existing users, filed under a fresh server per
  size, loaded unmeasured): issue 17 asks one request per process per beat whatever it
  holds, and the commands run inside are the same at every size. Measured last, after the
  reads and the dead process, so that these extra connections change neither.
- ``dead_sweep``: the last process stops beating: its lease is shortened to
  ``--dead-ttl`` seconds (``renew_server(ttl=...)``), left to expire, then
  ``sweep(limit=--sweep-limit)`` (default 250, the runtime's) is called while it removed
  something or says ``more``: total time, calls, longest call, users who went offline,
  and whether it is complete (every connection of the dead process removed, its filing
  and the retired filings gone, every other process's connections still filed).
- ``reads``: ``online_user_ids`` of 10,000 ids (half of them online), ``presence_snapshot``
  of 1,000 users (median of 20 calls each), ``all_online_user_ids`` (median of 3), one
  connect and disconnect of a new user (median of 20 pairs), keys and memory counts.

Every loop is bounded in count; the run stops with an error past ``--budget`` seconds.
Timing is reported, never asserted: ``tests/test_benchmark_smoke.py`` checks the report's
structure and that what was loaded is what was asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from procs import RedisProcess  # noqa: E402

from django_presence.runtime import SWEEP_LIMIT  # noqa: E402  (what a beat's sweep uses)

PREFIX = "scale"
LONG_TTL = 3600.0  # seconds: no lease expires during the run unless the run says so
CHUNK = 5000  # connections per heartbeat script call (backends/redis.py, _CHUNK)
BEAT_SIZES = (10, 10_000, 100_000)
# Commands that are the harness's own, not the backend's work (it reads ZCARD and HLEN
# only outside the measured windows: the scripts run them too).
HARNESS_COMMANDS = {
    "info",
    "slowlog",
    "config",
    "hello",
    "client",
    "ping",
    "select",
    "dbsize",
    "memory",
    "scan",
    "randomkey",
    "flushall",
    "script",
}
SCRIPT_COMMANDS = {"evalsha", "eval"}


def configure(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-scale-secret-key-long-enough-0123456789abcdef",
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django_presence"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DJANGO_PRESENCE={
            "BACKEND": "django_presence.backends.redis.RedisBackend",
            "REDIS_URL": url,
            "KEY_PREFIX": PREFIX,
            "SYNC_USER_MODEL": False,
        },
        USE_TZ=True,
    )
    django.setup()


class Budget:
    """Wall-clock bound of the whole run: ``check()`` raises once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self, phase: str) -> None:
        if self.elapsed() > self.seconds:
            raise RuntimeError(
                f"over the budget of {self.seconds:.0f} s before {phase} "
                f"({self.elapsed():.0f} s spent); use --scale or --budget"
            )


class Population:
    """Who is connected where: connection j belongs to user j % U and to process j*P//N."""

    def __init__(self, connections: int, users: int, processes: int, seed: int = 17) -> None:
        if not 0 < users <= connections or not 0 < processes <= connections:
            raise ValueError("need 0 < users <= connections and 0 < processes <= connections")
        rng = random.Random(seed)
        self.connections = connections
        self.users = users
        self.processes = processes
        self.servers = [
            f"web-{p:03d}.internal:{rng.randint(1000, 65000)}" for p in range(processes)
        ]
        layer_ids = [f"{rng.getrandbits(128):032x}" for _ in range(processes)]
        self.by_process: list[list[tuple[str, str]]] = [[] for _ in range(processes)]
        for j in range(connections):
            p = j * processes // connections
            cid = f"specific.{layer_ids[p]}!{rng.getrandbits(128):032x}"
            self.by_process[p].append((str(j % users + 1), cid))

    def all_pairs(self) -> list[tuple[str, str]]:
        return [pair for pairs in self.by_process for pair in pairs]


class Redis:
    """The harness's own blocking client: INFO, SLOWLOG, counts."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=60)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def commandstats(self) -> dict[str, tuple[int, int]]:
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        }

    def slowlog_reset(self) -> None:
        self.client.slowlog_reset()

    def longest_script_us(self) -> int:
        """The longest EVALSHA/EVAL (or backend read) logged since the last reset, in us."""
        entries = self.client.slowlog_get(1024)
        longest = 0
        for entry in entries:
            command = entry["command"]
            name = command.split(b" ", 1)[0] if isinstance(command, bytes) else command.split()[0]
            name = name.decode() if isinstance(name, bytes) else name
            if name.lower() not in HARNESS_COMMANDS:
                longest = max(longest, int(entry["duration"]))
        return longest


def stats_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """Requests (script calls), their server time, and the commands run inside them."""
    calls = {k: after[k][0] - before.get(k, (0, 0))[0] for k in after}
    usec = {k: after[k][1] - before.get(k, (0, 0))[1] for k in after}
    scripts = sum(calls[k] for k in SCRIPT_COMMANDS if k in calls)
    inner = {k: v for k, v in calls.items() if v and k not in SCRIPT_COMMANDS | HARNESS_COMMANDS}
    return {
        "script_calls": scripts,
        "script_usec": sum(usec[k] for k in SCRIPT_COMMANDS if k in usec),
        "inner_commands": sum(inner.values()),
        "inner_by_command": dict(sorted(inner.items())),
    }


async def measured(redis: Redis, call: Any) -> dict[str, Any]:
    """Run ``await call()`` once: wall ms, commandstats delta, longest logged command."""
    redis.slowlog_reset()
    before = redis.commandstats()
    start = time.perf_counter()
    result = await call()
    wall = time.perf_counter() - start
    delta = stats_delta(before, redis.commandstats())
    return {
        "wall_ms": wall * 1000,
        "longest_command_ms": redis.longest_script_us() / 1000,
        **delta,
        "result": result,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_ms"] for r in runs]
    return {
        "runs": len(runs),
        "wall_ms_median": statistics.median(walls),
        "wall_ms_min": min(walls),
        "wall_ms_max": max(walls),
        "requests": runs[-1]["script_calls"],
        "server_ms_median": statistics.median(r["script_usec"] for r in runs) / 1000,
        "longest_command_ms": max(r["longest_command_ms"] for r in runs),
        "inner_commands": runs[-1]["inner_commands"],
    }


def key(name: str) -> str:
    return f"{{{PREFIX}}}:{name}"


def filed(redis: Redis, servers: list[str]) -> int:
    """Connections filed under these servers: the sum of SCARD of their ``pc`` sets."""
    pipe = redis.client.pipeline(transaction=False)
    for server in servers:
        pipe.scard(key(f"pc:{server}"))
    return sum(int(n) for n in pipe.execute())


async def load(backend: Any, pop: Population, redis: Redis, budget: Budget) -> dict[str, Any]:
    # The slow log keeps the arguments of the commands it logs: off while memory is measured.
    redis.client.config_set("slowlog-log-slower-than", -1)
    redis.slowlog_reset()
    before = redis.used_memory()
    start = time.perf_counter()
    stored = online = held = 0
    for p, pairs in enumerate(pop.by_process):
        budget.check(f"loading process {p}")
        # A process's first renew_server: not held (False), its lease is now confirmed and
        # it files everything it holds.
        held += await backend.renew_server(pop.servers[p], ttl=LONG_TTL)
        restored = await backend.heartbeat(pairs, ttl=LONG_TTL, server=pop.servers[p])
        stored += len(restored)
        online += sum(1 for _, change in restored if change.transition.name == "ONLINE")
    seconds = time.perf_counter() - start
    after = redis.used_memory()
    delta = after - before
    client = redis.client
    pc = sum(int(client.memory_usage(key(f"pc:{s}"), samples=0) or 0) for s in pop.servers)
    by_key = {"pc:* (all servers)": pc}
    for name in ("procs", "online", "tseq", "offline"):
        by_key[name] = int(client.memory_usage(key(name), samples=1000) or 0)
    sample = [key(f"u:{uid}") for uid, _ in random.Random(1).sample(pop.all_pairs(), 200)]
    per_user_hash = statistics.mean(int(client.memory_usage(k, samples=0) or 0) for k in sample)
    by_key["u:* (estimated)"] = int(per_user_hash * pop.users)
    info = client.info("memory")
    return {
        "seconds": seconds,
        "connections_per_second": pop.connections / seconds,
        "stored": stored,
        "went_online": online,
        "first_renew_held": held,
        "loaded": {
            "connections": filed(redis, pop.servers),
            "users": int(client.hlen(key("online"))),
            "processes": len(pop.by_process),
            "servers_with_a_lease": int(client.zcard(key("procs"))),
            "servers_confirmed": int(client.scard(key("pconf"))),
            "keys": int(client.dbsize()),
        },
        "memory": {
            "used_memory_before": before,
            "used_memory_after": after,
            "delta": delta,
            "bytes_per_connection": delta / pop.connections,
            "bytes_per_online_user": delta / pop.users,
            "used_memory_rss_after": int(info["used_memory_rss"]),
            "memory_usage_by_key": by_key,
            "target_bytes_per_connection": 200,
            "target_met": delta / pop.connections <= 200,
        },
    }


async def beats_of(backend: Any, redis: Redis, server: str, count: int) -> list[dict[str, Any]]:
    """``count`` measured beats of ``server``: one ``renew_server_and_sweep`` each."""

    async def one() -> Any:
        held, swept = await backend.renew_server_and_sweep(
            server, ttl=LONG_TTL, limit=SWEEP_LIMIT, lock_ttl=0
        )
        return {"held": held, "swept": swept.removed}

    return [await measured(redis, one) for _ in range(count)]


async def beat(backend: Any, pop: Population, redis: Redis, beats: int) -> dict[str, Any]:
    pairs, server = pop.by_process[0], pop.servers[0]
    runs = await beats_of(backend, redis, server, beats)
    # Unmeasured: what the process would file again had its lease been lost. Nothing to
    # store again (0): the beats kept every connection it holds.
    restored = await backend.heartbeat(pairs, ttl=LONG_TTL, server=server)
    return {
        "connections": len(pairs),
        **summary(runs),
        "held": all(r["result"]["held"] for r in runs),
        "swept": sum(r["result"]["swept"] for r in runs),
        "restored": len(restored),
        "per_call_ms": [round(r["wall_ms"], 2) for r in runs],
        "inner_by_command": runs[-1]["inner_by_command"],
        "target_longest_command_ms": 10,
        "target_requests_per_beat": 1,
    }


async def beat_sizes(
    backend: Any, pop: Population, redis: Redis, budget: Budget
) -> dict[str, dict[str, Any]]:
    """Beats of a process holding 10, 10,000, 100,000 fresh connections (capped at N)."""
    rng = random.Random(3)
    sizes: dict[str, dict[str, Any]] = {}
    for size in sorted({min(s, pop.connections) for s in BEAT_SIZES}):
        server = f"web-size-{size}.internal:{rng.randint(1000, 65000)}"
        layer = f"{rng.getrandbits(128):032x}"
        pairs = [
            (str(j % pop.users + 1), f"specific.{layer}!{rng.getrandbits(128):032x}")
            for j in range(size)
        ]
        held_before = await backend.renew_server(server, ttl=LONG_TTL)
        stored = 0
        for start in range(0, size, CHUNK):
            budget.check(f"loading the beat of {size:,} connections")
            chunk = pairs[start : start + CHUNK]
            stored += len(await backend.heartbeat(chunk, ttl=LONG_TTL, server=server))
        runs = await beats_of(backend, redis, server, 3)
        sizes[str(size)] = {
            **summary(runs),
            "first_renew_held": held_before,
            "stored": stored,
            "filed": filed(redis, [server]),
            "held": all(r["result"]["held"] for r in runs),
            "inner_by_command": runs[-1]["inner_by_command"],
        }
    return sizes


async def dead_sweep(
    backend: Any, pop: Population, redis: Redis, ttl: float, limit: int, budget: Budget
) -> dict[str, Any]:
    dead, server = pop.by_process[-1], pop.servers[-1]
    # The process dies: its last renewal shortens its lease to ``ttl``.
    held = await backend.renew_server(server, ttl=ttl)
    await asyncio.sleep(ttl + 0.25)
    max_calls = math.ceil(len(dead) / limit) * 3 + 10
    redis.slowlog_reset()
    before = redis.commandstats()
    calls, removed, offline, walls, useful, more = 0, 0, 0, [], 0, False
    start = time.perf_counter()
    while calls < max_calls:
        budget.check("a dead process's sweep")
        t = time.perf_counter()
        result = await backend.sweep(limit=limit)
        walls.append((time.perf_counter() - t) * 1000)
        calls += 1
        removed += result.removed
        offline += sum(1 for c in result.changes if c.transition.name == "OFFLINE")
        useful += result.removed > 0
        more = result.more
        if not result.more and result.removed == 0:
            break
    total = time.perf_counter() - start
    delta = stats_delta(before, redis.commandstats())
    longest = redis.longest_script_us() / 1000  # before the harness's own reads below
    left = filed(redis, pop.servers[:-1])
    dead_filing = bool(redis.client.exists(key(f"pc:{server}")))
    retired = int(redis.client.zcard(key("retired")))
    return {
        "connections": len(dead),
        "ttl_seconds": ttl,
        "sweep_limit": limit,
        "held_at_last_renewal": held,
        "removed": removed,
        "users_offline": offline,
        "calls": calls,
        "calls_that_removed": useful,
        "stopped_with_more": more,
        "total_ms": total * 1000,
        "longest_call_wall_ms": max(walls),
        "longest_command_ms": longest,
        "server_ms": delta["script_usec"] / 1000,
        "inner_commands": delta["inner_commands"],
        "inner_by_command": delta["inner_by_command"],
        "per_call_ms": [round(w, 2) for w in walls],
        "filed_left": left,
        "dead_filing_exists": dead_filing,
        "retired_left": retired,
        "complete": removed == len(dead)
        and left == pop.connections - len(dead)
        and not dead_filing
        and retired == 0,
    }


async def restore(backend: Any, pop: Population, redis: Redis) -> dict[str, Any]:
    """The dead process was only paused: its lease was lost, it files everything again.

    What a process does after its connections were swept during a pause longer than
    ``CONNECTION_TTL``, or after Redis lost its data: one ``heartbeat`` of what it holds,
    scripts of ``_HEARTBEAT_CHUNK`` pairs, each pair stored again in full.
    """
    from django_presence.backends.redis import _HEARTBEAT_CHUNK

    pairs, server = pop.by_process[-1], pop.servers[-1]
    held = await backend.renew_server(server, ttl=LONG_TTL)
    redis.slowlog_reset()
    before = redis.commandstats()
    start = time.perf_counter()
    restored = await backend.heartbeat(pairs, ttl=LONG_TTL, server=server)
    wall = (time.perf_counter() - start) * 1000
    delta = stats_delta(before, redis.commandstats())
    return {
        "connections": len(pairs),
        "held": held,
        "restored": len(restored),
        "pairs_per_call": _HEARTBEAT_CHUNK,
        "calls": delta["script_calls"],
        "wall_ms": wall,
        "server_ms": delta["script_usec"] / 1000,
        "longest_command_ms": redis.longest_script_us() / 1000,
        "target_longest_command_ms": 10,
    }


async def timed_calls(redis: Redis, call: Any, count: int) -> dict[str, Any]:
    walls = []
    redis.slowlog_reset()
    before = redis.commandstats()
    for _ in range(count):
        start = time.perf_counter()
        await call()
        walls.append((time.perf_counter() - start) * 1000)
    delta = stats_delta(before, redis.commandstats())
    # Scripts, or else the plain reads (HMGET, HKEYS, pipelined in one round trip).
    server_calls = delta["script_calls"] or sum(
        v for k, v in delta["inner_by_command"].items() if k in ("hmget", "hkeys")
    )
    return {
        "calls": count,
        "wall_ms_median": statistics.median(walls),
        "wall_ms_max": max(walls),
        "redis_commands_per_call": server_calls / count,
        "longest_command_ms": redis.longest_script_us() / 1000,
    }


async def reads(backend: Any, pop: Population, redis: Redis) -> dict[str, Any]:
    rng = random.Random(2)
    online = [str(u) for u in rng.sample(range(1, pop.users + 1), min(5000, pop.users))]
    absent = [str(pop.users + 1 + k) for k in range(10_000 - len(online))]
    ids = online + absent
    rng.shuffle(ids)
    snapshot_ids = [str(u) for u in rng.sample(range(1, pop.users + 1), min(1000, pop.users))]
    found = await backend.online_user_ids(ids)

    async def connect_and_close() -> None:
        await backend.add_connection("new-user", "specific.x!y", ttl=LONG_TTL, server="web-x:1")
        await backend.remove_connection("new-user", "specific.x!y")

    result = {
        "online_user_ids": {
            "ids": len(ids),
            "online": len(found),
            **await timed_calls(redis, lambda: backend.online_user_ids(ids), 20),
        },
        "presence_snapshot": {
            "ids": len(snapshot_ids),
            **await timed_calls(redis, lambda: backend.presence_snapshot(snapshot_ids), 20),
        },
        "all_online_user_ids": {
            "online": len(await backend.all_online_user_ids()),
            **await timed_calls(redis, backend.all_online_user_ids, 3),
        },
        "connect_and_close": await timed_calls(redis, connect_and_close, 20),
    }
    return result


def versions(redis: Redis) -> dict[str, str]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "redis-server": str(redis.client.info("server")["redis_version"]),
        "redis-py": version("redis"),
        "django-user-presence": version("django-user-presence"),
    }


async def run(args: argparse.Namespace, url: str, budget: Budget) -> dict[str, Any]:
    from django_presence.backends.redis import RedisBackend

    connections = max(1, round(args.connections * args.scale))
    users = max(1, round(args.users * args.scale))
    processes = min(args.processes, connections)
    redis = Redis(url)
    redis.client.config_set("slowlog-max-len", 1024)
    for directive in args.redis_config:
        name, _, value = directive.partition(" ")
        redis.client.config_set(name, value)
    report: dict[str, Any] = {
        "parameters": {
            "connections": connections,
            "users": users,
            "processes": processes,
            "connections_per_process": connections // processes,
            "scale": args.scale,
            "sweep_limit": args.sweep_limit,
            "beat_sweep_limit": SWEEP_LIMIT,
            "heartbeat_chunk": CHUNK,
            "dead_ttl": args.dead_ttl,
            "redis_config": args.redis_config,
        },
        "versions": versions(redis),
        "machine": {"cores": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
    }
    pop = Population(connections, users, processes)
    backend = RedisBackend(url=url, key_prefix=PREFIX)
    # Load every script and open the pool first, then start from an empty database.
    warm = [("0", "warm-up")]
    await backend.renew_server("warm", ttl=1)
    await backend.heartbeat(warm, ttl=1, server="warm")
    await backend.renew_server_and_sweep("warm", ttl=1)
    await backend.sweep()
    await backend.presence_snapshot(["0"])
    await backend.add_connection("0", "w", ttl=1)
    await backend.remove_connection("0", "w")
    redis.client.flushall()
    try:
        print(f"loading {connections:,} connections of {users:,} users in {processes} processes")
        loaded = await load(backend, pop, redis, budget)
        report["load"] = {k: v for k, v in loaded.items() if k not in ("loaded", "memory")}
        report["loaded"] = loaded["loaded"]
        report["memory"] = loaded["memory"]
        redis.client.config_set("slowlog-log-slower-than", 0)  # log every command from now
        budget.check("the beat")
        print("beats")
        report["beat"] = await beat(backend, pop, redis, args.beats)
        budget.check("the reads")
        print("reads")
        report["reads"] = await reads(backend, pop, redis)
        budget.check("the dead process")
        print("a dead process")
        report["dead_sweep"] = await dead_sweep(
            backend, pop, redis, args.dead_ttl, args.sweep_limit, budget
        )
        budget.check("the dead process filing again")
        print("the dead process files its connections again")
        report["restore"] = await restore(backend, pop, redis)
        budget.check("the beats of 10 to 100,000 connections")
        print("beats of 10 to 100,000 connections")
        report["beat"]["sizes"] = await beat_sizes(backend, pop, redis, budget)
        report["machine"]["loadavg_end"] = list(os.getloadavg())
        report["seconds"] = budget.elapsed()
    finally:
        await backend.aclose()
        redis.client.close()
    return report


def table(report: dict[str, Any]) -> str:
    p, m, b = report["parameters"], report["memory"], report["beat"]
    d, r = report["dead_sweep"], report["reads"]
    rows = [
        (
            "connections / users / processes loaded",
            "{:,} / {:,} / {}".format(
                report["loaded"]["connections"],
                report["loaded"]["users"],
                report["loaded"]["processes"],
            ),
        ),
        (
            "load time (renew_server + heartbeat of every process)",
            f"{report['load']['seconds']:.1f} s "
            f"({report['load']['connections_per_second']:,.0f} conn/s)",
        ),
        ("Redis keys", f"{report['loaded']['keys']:,}"),
        ("used_memory delta", f"{m['delta'] / 2**20:,.1f} MiB"),
        (
            "bytes per connection (target <= 200)",
            f"{m['bytes_per_connection']:.0f} ({'met' if m['target_met'] else 'not met'})",
        ),
        ("bytes per online user", f"{m['bytes_per_online_user']:.0f}"),
        (
            f"one beat (renew_server_and_sweep), {b['connections']:,} conns:"
            " wall, median [min-max]",
            f"{b['wall_ms_median']:.1f} ms [{b['wall_ms_min']:.1f}-{b['wall_ms_max']:.1f}]",
        ),
        (
            "one beat: Redis requests / server time / lease held",
            f"{b['requests']} / {b['server_ms_median']:.2f} ms / {b['held']}",
        ),
        ("one beat: longest single call (target <= 10 ms)", f"{b['longest_command_ms']:.2f} ms"),
        ("one beat: commands run inside the script", f"{b['inner_commands']:,}"),
    ]
    for size, s in b["sizes"].items():
        rows.append(
            (
                f"beat of {int(size):,} conns: requests / wall / longest call / commands",
                f"{s['requests']} / {s['wall_ms_median']:.2f} ms"
                f" / {s['longest_command_ms']:.2f} ms / {s['inner_commands']}",
            )
        )
    rows += [
        (
            f"dead process ({d['connections']:,} conns): sweep time, calls",
            f"{d['total_ms']:.0f} ms, {d['calls']} calls of limit {p['sweep_limit']}",
        ),
        (
            "dead process: longest single sweep call",
            f"{d['longest_command_ms']:.2f} ms (wall {d['longest_call_wall_ms']:.1f} ms)",
        ),
        (
            "dead process: sweep server time",
            f"{d['server_ms']:.1f} ms",
        ),
        (
            "dead process: removed / users offline / complete",
            f"{d['removed']:,} / {d['users_offline']:,} / {d['complete']}",
        ),
    ]
    if "restore" in report:
        x = report["restore"]
        rows.append(
            (
                f"lost lease: filing {x['connections']:,} conns again, {x['pairs_per_call']}"
                " per call: calls / wall / Redis time / longest call (target <= 10 ms)",
                f"{x['calls']} / {x['wall_ms']:.0f} ms / {x['server_ms']:.1f} ms"
                f" / {x['longest_command_ms']:.2f} ms ({x['restored']:,} stored again)",
            )
        )
    for name, label in (
        ("online_user_ids", "online_user_ids, {ids:,} ids"),
        ("presence_snapshot", "presence_snapshot, {ids:,} users"),
        ("all_online_user_ids", "all_online_user_ids ({online:,} online)"),
        ("connect_and_close", "connect + disconnect of a new user"),
    ):
        x = r[name]
        rows.append(
            (
                label.format(**x) + f", median of {x['calls']}",
                f"{x['wall_ms_median']:.2f} ms"
                f" (longest Redis call {x['longest_command_ms']:.2f} ms)",
            )
        )
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=300_000)
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies N and U")
    parser.add_argument("--beats", type=int, default=5, help="beats of one process timed")
    parser.add_argument("--dead-ttl", type=float, default=2.0, help="s; the dead process's lease")
    parser.add_argument(
        "--sweep-limit",
        type=int,
        default=SWEEP_LIMIT,
        help="connections examined per sweep call of the dead process",
    )
    parser.add_argument(
        "--redis-config",
        action="append",
        default=[],
        metavar="'NAME VALUE'",
        help="a CONFIG SET of the benchmark's Redis, e.g. 'hash-max-listpack-value 128'",
    )
    parser.add_argument("--budget", type=float, default=230.0, help="s; stop past it")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    budget = Budget(args.budget)
    server = RedisProcess().start()
    try:
        configure(server.url)
        report = asyncio.run(run(args, server.url, budget))
    finally:
        server.stop()
    print(table(report))
    print(f"{report['seconds']:.0f} s; load average {report['machine']['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
