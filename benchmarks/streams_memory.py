"""Redis memory per stored stream message: ``python benchmarks/streams_memory.py``.

Starts a private redis-server (nothing else on it), publishes N = 1000 messages with a
200-byte payload through ``RedisBackend.stream_publish`` spread over 1, 100 and 1000
streams (history size 1000, so nothing is trimmed), then once more tracked for
``stream_due``, and 100 users' cursors on one stream. For each run it prints the
``INFO memory`` ``used_memory`` delta and the sum of ``MEMORY USAGE <key> SAMPLES 0`` of
the backend's keys by kind (``m`` meta, ``l`` history, ``a`` cursors, ``due``).
The numbers are in docs/backends.md, "Streams (message history)".
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from tests.servers import RedisProcess  # noqa: E402

from django_presence.backends.base import StreamLimits  # noqa: E402
from django_presence.backends.redis import RedisBackend  # noqa: E402

N = 1000
PAYLOAD = ('{"type": "message", "text": "' + "x" * 200)[:198] + '"}'
LIMITS = StreamLimits(size=N, ttl=86400, meta_ttl=604800)


def usage_by_kind(client: redis.Redis) -> dict[str, int]:
    usage: dict[str, int] = {}
    for key in client.scan_iter("{bench}:*"):
        kind = key.decode().rsplit(":", 1)[-1]
        usage[kind] = usage.get(kind, 0) + int(client.memory_usage(key, samples=0) or 0)
    return usage


async def measure(url: str, streams: int, track: bool, cursors: int = 0) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    backend = RedisBackend(url=url, key_prefix="bench")
    # Load the scripts and open the connection before the first reading.
    await backend.stream_read([("warm-up", None, None)], limits=LIMITS)
    client.delete("{bench}:s:warm-up:m")
    before = int(client.info("memory")["used_memory"])
    for i in range(N):
        track_as = ("12345", 3600.0) if track else None
        await backend.stream_publish(
            f"stream-{i % streams}", PAYLOAD, limits=LIMITS, track=track_as
        )
    if cursors:
        epoch = (await backend.stream_positions(["stream-0"]))["stream-0"]
        assert epoch is not None
        updates = [("stream-0", str(10_000 + u), epoch.epoch, 900, 850) for u in range(cursors)]
        await backend.stream_ack(updates, limits=LIMITS)
    delta = int(client.info("memory")["used_memory"]) - before
    usage = usage_by_kind(client)
    total = sum(usage.values())
    print(
        f"{N} messages over {streams} stream(s), tracked={track}, cursors={cursors}: "
        f"used_memory +{delta} B ({delta / N:.0f} B/message, {delta / streams:.0f} B/stream); "
        f"MEMORY USAGE {usage} = {total} B ({total / N:.0f} B/message, "
        f"{total / streams:.0f} B/stream)"
    )
    await backend.aclose()
    client.close()


async def main() -> None:
    assert len(PAYLOAD) == 200
    server = RedisProcess().start()
    try:
        await measure(server.url, 1, False)
        await measure(server.url, 100, False)
        await measure(server.url, 1000, False)
        await measure(server.url, 1, True)
        await measure(server.url, 1, False, cursors=100)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
