#!/usr/bin/env python3
"""CPU per open/close cycle, in process: the cheap-auth package consumer against the bare one.

    python benchmarks/cycle_cpu.py --cycles 2000 --blocks 6           # the ratio
    python benchmarks/cycle_cpu.py --cycles 2000 --profile out.pstats  # plus a cProfile

Starts its own Redis and a PostgreSQL database (SQLite when PostgreSQL is unreachable), as
``run.py`` does, then runs connect/close cycles through Channels'
``WebsocketCommunicator`` against ``CheapAuthMiddleware`` (one indexed user lookup) and
either ``BareConsumer`` or ``PackageConsumer`` (the mixin, the Redis backend,
``is_online`` synced, no grace period, one ``user_online``/``user_offline`` receiver doing
a ``group_send`` on channels_redis): the ``bare-cheap`` and ``package-cheap`` variants of
``run.py``. Blocks of the two alternate in one process, so that a machine shared with other
work slows both alike; the ratio of this process's CPU per cycle is what to read. Redis and
PostgreSQL CPU are not counted, and the test client's own work is in both (which makes the
ratio smaller than ``run.py``'s, measured from outside).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks of each variant")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the package blocks")
    parser.add_argument("--top", type=int, default=35, help="profile lines to print")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
        ),
    )
    return parser.parse_args()


async def cycles(consumer: Any, user_ids: list[int], count: int) -> None:
    """``count`` connect-then-close cycles, one at a time, round-robin over the users."""
    from benchproject.consumers import CheapAuthMiddleware
    from channels.testing import WebsocketCommunicator

    app = CheapAuthMiddleware(consumer.as_asgi())
    for i in range(count):
        uid = user_ids[i % len(user_ids)]
        communicator = WebsocketCommunicator(
            app, "/ws/bench/", subprotocols=["access_token", str(uid)]
        )
        connected, _ = await communicator.connect()
        assert connected, uid
        await communicator.disconnect()


async def measure(args: argparse.Namespace, user_ids: list[int]) -> dict[str, Any]:
    from benchproject import stats
    from benchproject.consumers import BareConsumer, PackageConsumer

    # No channel layer in the consumers themselves: cancelling channels_redis 4.3's blocking
    # receive hangs under the test communicator. The receiver's group_send still goes
    # through channels_redis.
    class Bare(BareConsumer):
        channel_layer_alias = "none"

    class Package(PackageConsumer):
        channel_layer_alias = "none"

    variants = {"bare-cheap": Bare, "package-cheap": Package}
    # Warm up pools, the DB connection, the Lua scripts and every code path.
    for consumer in variants.values():
        await cycles(consumer, user_ids, 100)
    per_cycle: dict[str, list[float]] = {name: [] for name in variants}
    profiler = cProfile.Profile() if args.profile else None
    stats.reset()
    for block in range(args.blocks):
        order = list(variants.items())
        if block % 2:
            order.reverse()
        for name, consumer in order:
            profiling = profiler is not None and name == "package-cheap"
            start = time.process_time()
            if profiling:
                profiler.enable()  # type: ignore[union-attr]
            await cycles(consumer, user_ids, args.cycles)
            if profiling:
                profiler.disable()  # type: ignore[union-attr]
            per_cycle[name].append((time.process_time() - start) * 1e6 / args.cycles)
    snap = stats.snapshot()
    expected = args.blocks * args.cycles
    online, offline = sum(snap["online"].values()), sum(snap["offline"].values())
    if profiler is not None:
        profiler.dump_stats(args.profile)
    bare = statistics.median(per_cycle["bare-cheap"])
    package = statistics.median(per_cycle["package-cheap"])
    return {
        "us_per_cycle": {k: [round(v) for v in vs] for k, vs in per_cycle.items()},
        "median_us": {"bare-cheap": round(bare), "package-cheap": round(package)},
        "ratio": round(package / bare, 3),
        "events": {"online": online, "offline": offline, "expected_each": expected},
        "profiled": bool(profiler),
    }


def child(args: argparse.Namespace) -> None:
    import django

    django.setup()
    user_ids = json.loads(os.environ["CYCLE_USER_IDS"])
    result = asyncio.run(measure(args, user_ids))
    print(json.dumps(result, indent=1))
    if args.profile:
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(args.top)
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    args = parse_args()
    if os.environ.get("CYCLE_USER_IDS"):
        child(args)
        return
    from run import postgres_reachable

    redis_process = procs.RedisProcess()
    database = procs.Database(args.postgres if postgres_reachable(args.postgres) else None)
    try:
        redis_process.start()
        database.create()
        env = procs.server_env("package-cheap", database.url, redis_process.url)
        out = subprocess.run(
            [sys.executable, "-m", "benchproject.setup_db", str(args.users)],
            env=env,
            cwd=procs.BENCH_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
        env["CYCLE_USER_IDS"] = out.stdout.strip().splitlines()[-1]
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
            env=env,
            cwd=procs.BENCH_DIR,
            check=True,
        )
    finally:
        redis_process.stop()
        database.drop()


if __name__ == "__main__":
    main()
