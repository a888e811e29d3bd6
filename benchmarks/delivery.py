#!/usr/bin/env python3
"""What recoverable delivery costs, against a raw ``group_send`` measured in the same run.

    python benchmarks/delivery.py                 # the full run (about a minute)
    python benchmarks/delivery.py --smoke --json out.json

Needs a Redis server (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``); it uses keys
under its own random prefixes and deletes them. Measured, in one process, on the Redis
presence backend and channels_redis:

- ``notify``: ``send_notification_to_user`` to a user with 4 tabs (4 channels in the
  user's group) against a raw ``group_send`` of the same event to the same group, in
  interleaved blocks; wall time and CPU time per send (medians over rounds).
- ``notify_delivered``: the same, end to end, with 4 open ``ws/user/`` sockets served in
  this process: until each received the frame; the CPU time is the server's whole cost.
- ``broadcast``: ``broadcast_system_message`` against a raw ``group_send`` to a group of
  1,000 channels.
- ``replay``: a ``ws/user/`` connection that reconnects having missed 300 messages: the
  server time from the handshake to the last replayed frame handed to the socket.
- ``memory``: Redis memory per stored message (``MEMORY USAGE`` of the streams' keys after
  storing ``HISTORY_SIZE`` messages in each of 100 streams).

Targets (issue 14): notify <= 1.3x raw, broadcast <= 1.3x raw, replay of 300 < 50 ms.
Timing is reported, never asserted: the smoke test only checks that it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"bench-delivery-{uuid.uuid4().hex[:8]}"
LAYER_PREFIX = f"bench-asgi-{uuid.uuid4().hex[:8]}"


def configure() -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-delivery-secret-key-long-enough-0123456789abcdef",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "channels",
            "django_presence",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                    "prefix": LAYER_PREFIX,
                    "capacity": 100_000,
                    "expiry": 60,
                },
            }
        },
        DJANGO_PRESENCE={
            "BACKEND": "django_presence.backends.redis.RedisBackend",
            "REDIS_URL": REDIS_URL,
            "KEY_PREFIX": PREFIX,
            "SYNC_USER_MODEL": False,
            "POLICY": "django_presence.policies.OpenPolicy",
            "UNDELIVERED_AFTER": 30,
        },
        USE_TZ=True,
    )
    django.setup()


class _User:
    """What the consumer needs of ``scope["user"]``: no database involved."""

    is_authenticated = True
    is_active = True
    is_staff = False

    def __init__(self, pk: int) -> None:
        self.pk = pk


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def _timed(send: Any, count: int) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``send()``, over ``count`` calls in a row."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await send()
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


async def _flush_layer(client: Any, *, groups: bool = False) -> None:
    """Empty the channels' queues (and with ``groups``, forget the groups too)."""
    keys = [
        key
        async for key in client.scan_iter(match=f"{LAYER_PREFIX}*", count=1000)
        if groups or b":group:" not in key
    ]
    for start in range(0, len(keys), 500):
        await client.delete(*keys[start : start + 500])


async def compare(
    name: str, service: Any, raw: Any, count: int, rounds: int, client: Any
) -> dict[str, Any]:
    """Interleaved rounds of ``service`` and ``raw``; medians and ratios."""
    runs: dict[str, list[tuple[float, float]]] = {"service": [], "raw": []}
    await _timed(service, max(1, count // 10))  # load scripts, warm connections
    await _timed(raw, max(1, count // 10))
    for round_ in range(rounds):
        order = [("service", service), ("raw", raw)]
        if round_ % 2:
            order.reverse()
        for label, send in order:
            await _flush_layer(client)
            runs[label].append(await _timed(send, count))
    result: dict[str, Any] = {"sends_per_round": count, "rounds": rounds}
    for label, values in runs.items():
        result[f"{label}_wall_us"] = round(_median([v[0] for v in values]) * 1e6, 1)
        result[f"{label}_cpu_us"] = round(_median([v[1] for v in values]) * 1e6, 1)
    result["wall_ratio"] = round(result["service_wall_us"] / result["raw_wall_us"], 3)
    result["cpu_ratio"] = round(result["service_cpu_us"] / result["raw_cpu_us"], 3)
    print(
        f"{name}: service {result['service_wall_us']} us wall / {result['service_cpu_us']} us "
        f"CPU; raw {result['raw_wall_us']} / {result['raw_cpu_us']}; "
        f"ratio wall {result['wall_ratio']}x, CPU {result['cpu_ratio']}x",
        flush=True,
    )
    return result


async def notify(count: int, rounds: int, client: Any) -> dict[str, Any]:
    from channels.layers import get_channel_layer

    from django_presence import groups, protocol
    from django_presence.services import user_messaging_service

    layer = get_channel_layer()
    group = groups.user_group(1)
    for tab in range(4):
        await layer.group_add(group, f"{LAYER_PREFIX}.tab{tab}!x")
    event = {"type": protocol.EVENT_NOTIFICATION, "title": "t", "message": "m" * 100, "extra": {}}

    async def service() -> None:
        await user_messaging_service.send_notification_to_user(1, "t", "m" * 100)

    async def raw() -> None:
        await layer.group_send(group, dict(event))

    return await compare("notify, 4 tabs", service, raw, count, rounds, client)


async def notify_delivered(count: int, rounds: int, client: Any) -> dict[str, Any]:
    """The same comparison, end to end: until all 4 open ``ws/user/`` sockets received it.

    The consumers run in this process, so the CPU time is the server's whole cost of the
    notification: sending, the channel layer, each consumer's handling (the cursor
    check for stored messages) and the socket send.
    """
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from django_presence import groups, protocol
    from django_presence.consumers import UserConsumer
    from django_presence.services import user_messaging_service

    user = _User(3)
    tabs = []
    for _ in range(4):
        tab = WebsocketCommunicator(UserConsumer.as_asgi(), "/ws/user/")
        tab.scope["user"] = user
        assert (await tab.connect(timeout=30))[0]
        tabs.append(tab)
    layer = get_channel_layer()
    event = {"type": protocol.EVENT_NOTIFICATION, "title": "t", "message": "m" * 100, "extra": {}}

    async def received() -> None:
        frames = await asyncio.gather(*(t.receive_json_from(timeout=30) for t in tabs))
        assert all(f["type"] == "notification" for f in frames)

    async def service() -> None:
        await user_messaging_service.send_notification_to_user(user.pk, "t", "m" * 100)
        await received()

    async def raw() -> None:
        await layer.group_send(groups.user_group(user.pk), dict(event))
        await received()

    try:
        return await compare("notify, 4 tabs, until received", service, raw, count, rounds, client)
    finally:
        for tab in tabs:
            await tab.disconnect()


async def broadcast(count: int, rounds: int, sockets: int, client: Any) -> dict[str, Any]:
    from channels.layers import get_channel_layer

    from django_presence import groups, protocol
    from django_presence.services import user_messaging_service

    layer = get_channel_layer()
    group = groups.broadcast_group()
    for i in range(sockets):
        await layer.group_add(group, f"{LAYER_PREFIX}.fan{i}!x")
    event = {"type": protocol.EVENT_BROADCAST, "message": "m" * 100, "extra": {}}

    async def service() -> None:
        await user_messaging_service.broadcast_system_message("m" * 100)

    async def raw() -> None:
        await layer.group_send(group, dict(event))

    result = await compare(f"broadcast, {sockets} sockets", service, raw, count, rounds, client)
    result["sockets"] = sockets
    return result


async def replay(missed: int, rounds: int) -> dict[str, Any]:
    from channels.testing import WebsocketCommunicator

    from django_presence.consumers import UserConsumer
    from django_presence.services import user_messaging_service

    user = _User(2)
    first = await user_messaging_service.send_notification_to_user(user.pk, "t", "first")
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        for i in range(missed):
            sent = await user_messaging_service.send_notification_to_user(user.pk, "t", f"m{i}")
        top = sent.offset or 0
        since = top - missed
        url = f"/ws/user/?since=user:{first.epoch}:{since}"
        communicator = WebsocketCommunicator(UserConsumer.as_asgi(), url)
        communicator.scope["user"] = user
        wall, cpu0 = time.perf_counter(), time.process_time()
        connected, _ = await communicator.connect(timeout=30)
        assert connected
        frames = [await communicator.receive_json_from(timeout=30) for _ in range(missed + 1)]
        times.append(time.perf_counter() - wall)
        cpu.append(time.process_time() - cpu0)
        assert frames[0]["type"] == "recovery", frames[0]
        assert frames[0]["data"]["streams"]["user"]["recovered"] is True, frames[0]
        assert [f["offset"] for f in frames[1:]] == list(range(since + 1, top + 1))
        await communicator.disconnect()
    result = {
        "missed": missed,
        "rounds": rounds,
        "handshake_to_last_frame_ms": round(_median(times) * 1000, 2),
        "cpu_ms": round(_median(cpu) * 1000, 2),
    }
    print(
        f"replay of {missed}: {result['handshake_to_last_frame_ms']} ms from the handshake "
        f"to the last frame ({result['cpu_ms']} ms CPU, test client included)",
        flush=True,
    )
    return result


async def memory(streams: int, client: Any) -> dict[str, Any]:
    from django_presence import delivery
    from django_presence.backends import get_backend

    size = delivery.limits().size
    payload = {"type": "presence.notification", "title": "t", "message": "m" * 200, "extra": {}}
    names = [f"bench-memory:{s}" for s in range(streams)]
    for name in names:
        for _ in range(size):
            await delivery.publish(name, dict(payload))
    # ``MEMORY USAGE`` of the streams' own keys, not the server's ``used_memory``: the
    # server is shared (the test suite runs next to this script), so a difference of
    # ``used_memory`` counts whatever else was written or deleted meanwhile.
    backend = get_backend()
    used = 0
    for name in names:
        for key in backend._stream_keys(name):
            used += int(await client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)
    stored = streams * size
    encoded = len(json.dumps(payload, separators=(",", ":")))
    result = {
        "streams": streams,
        "messages": stored,
        "payload_bytes": encoded,
        "bytes_per_message": round(used / stored, 1),
    }
    print(
        f"memory: {result['bytes_per_message']} bytes per stored message of {encoded} bytes "
        f"({stored} messages in {streams} streams)",
        flush=True,
    )
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from django_presence.backends import get_backend

    client = aioredis.Redis.from_url(REDIS_URL)
    smoke = args.smoke
    try:
        report = {
            "notify": await notify(50 if smoke else 1000, 2 if smoke else 5, client),
            "notify_delivered": await notify_delivered(
                20 if smoke else 300, 2 if smoke else 5, client
            ),
            "broadcast": await broadcast(
                5 if smoke else 50, 2 if smoke else 5, 100 if smoke else 1000, client
            ),
            "replay": await replay(300, 2 if smoke else 5),
            "memory": await memory(5 if smoke else 100, client),
        }
    finally:
        await get_backend().clear()
        await _flush_layer(client, groups=True)
        await client.aclose()
    report["targets"] = {
        "notify_wall_ratio_max": 1.3,
        "broadcast_wall_ratio_max": 1.3,
        "replay_ms_max": 50,
    }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few sends: checks it runs")
    parser.add_argument("--json", type=Path, help="write the report here")
    options = parser.parse_args()
    configure()
    report = asyncio.run(main(options))
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
