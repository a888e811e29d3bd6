#!/usr/bin/env python3
"""How long after a clean close a user is announced offline (the ``user_offline`` signal).

    .venv/bin/python benchmarks/grace_delay.py [--closes 50] [--grace 5] [--interval 15]
        [--redis redis://localhost:6379/0]

One process, one event loop, like one server: ``--closes`` users connect, then close
their one connection at random moments spread over two heartbeat intervals, and nobody
reconnects. Prints the distribution of close-to-``user_offline`` delays, and how many
signals each user got (exactly one is right).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def configure(args: argparse.Namespace) -> None:
    import django
    from django.conf import settings

    presence: dict[str, Any] = {
        "BACKEND": "django_presence.backends.memory.MemoryBackend",
        "OFFLINE_GRACE_PERIOD": args.grace,
        "HEARTBEAT_INTERVAL": args.interval,
        "SYNC_USER_MODEL": False,
        "POLICY": "django_presence.policies.OpenPolicy",
    }
    if args.redis:
        presence.update(
            BACKEND="django_presence.backends.redis.RedisBackend",
            REDIS_URL=args.redis,
            KEY_PREFIX=f"bench-{uuid.uuid4().hex[:8]}",
        )
    settings.configure(
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django_presence"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        DJANGO_PRESENCE=presence,
        USE_TZ=True,
    )
    django.setup()


async def main(args: argparse.Namespace) -> None:
    from django_presence.backends import get_backend
    from django_presence.ids import new_connection_id
    from django_presence.runtime import get_runtime
    from django_presence.services import user_online_service
    from django_presence.signals import user_offline

    offline_at: dict[str, list[float]] = {}

    def on_offline(sender: Any, user_id: Any, **kwargs: Any) -> None:
        offline_at.setdefault(str(user_id), []).append(time.monotonic())

    user_offline.connect(on_offline, weak=False)
    runtime = get_runtime()
    users = [str(1_000_000 + i) for i in range(args.closes)]
    cids = {}
    for user in users:
        cids[user] = new_connection_id()
        runtime.track_connection(user, cids[user])
        await user_online_service.aadd_user_connection(user, cids[user])

    closed_at: dict[str, float] = {}

    async def close(user: str, after: float) -> None:
        await asyncio.sleep(after)
        runtime.untrack_connection(cids[user])
        closed_at[user] = time.monotonic()
        await user_online_service.aremove_user_connection(user, cids[user])

    rng = random.Random(args.seed)
    await asyncio.gather(*(close(u, rng.uniform(0, 2 * args.interval)) for u in users))
    deadline = time.monotonic() + args.grace + 2 * args.interval + 5
    while len(offline_at) < len(users) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # polls a dict filled by a signal receiver
    await asyncio.sleep(0.5)  # any duplicate signal
    await runtime.stop()
    await get_backend().clear()
    await get_backend().aclose()

    delays = sorted(offline_at[u][0] - closed_at[u] for u in users if u in offline_at)
    signals = [len(offline_at.get(u, [])) for u in users]
    print(
        f"{args.closes} clean closes, OFFLINE_GRACE_PERIOD {args.grace} s, "
        f"HEARTBEAT_INTERVAL {args.interval} s, backend "
        f"{'redis' if args.redis else 'memory'}"
    )
    print(f"offline signals per user: min {min(signals)}, max {max(signals)}")
    if delays:
        q = statistics.quantiles(delays, n=20)
        print(
            f"close -> user_offline: min {delays[0]:.2f} s, median {statistics.median(delays):.2f}"
            f" s, p95 {q[18]:.2f} s, max {delays[-1]:.2f} s ({len(delays)} users)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closes", type=int, default=50)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--redis", default="")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    configure(arguments)
    asyncio.run(main(arguments))
