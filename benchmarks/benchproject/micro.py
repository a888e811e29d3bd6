"""In-process measurements: ``python -m benchproject.micro online-ids N REPEATS``.

``online-ids``: ``user_online_service.aget_online_user_ids`` for N ids (half of them
online) against the one raw Redis command that answers the same question (HMGET of the
backend's ``online`` hash), on the same client; then the sync forms (``is_user_online`` and
``get_online_user_ids``) against the same commands on a blocking redis-py client. Prints
JSON.
"""

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")


def _calls(client: Any) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def online_ids(n: int, repeats: int) -> dict[str, Any]:
    """Time the service against the raw HMGET."""
    import redis
    from django.conf import settings

    from django_presence.backends import get_backend
    from django_presence.services.online import user_online_service

    backend: Any = get_backend()
    await backend.clear()
    ids = list(range(1, n + 1))
    # Half the users online, set through the backend itself.
    for start in range(0, n, 2):
        await backend.add_connection(str(ids[start]), f"c{start}", ttl=600)
    client = backend.client()
    key = backend._keys[1]  # the "online" hash; the raw command reads it directly
    keys = [str(i) for i in ids]

    async def service() -> Any:
        return await user_online_service.aget_online_user_ids(ids)

    async def raw() -> Any:
        values = await client.hmget(key, keys)
        return {i for i, v in zip(ids, values, strict=True) if v is not None}

    assert await service() == await raw()
    timings: dict[str, list[float]] = {"service": [], "raw": []}
    for _ in range(repeats):
        for name, call in (("raw", raw), ("service", service)):
            start = time.perf_counter()
            await call()
            timings[name].append(time.perf_counter() - start)
    with redis.Redis.from_url(settings.REDIS_URL) as sync_client:
        before = _calls(sync_client)
        await service()
        after = _calls(sync_client)
    commands = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    commands = {k: v for k, v in commands.items() if v and k != "info"}
    return {
        "n": n,
        "online": len(await raw()),
        "service_ms": statistics.median(timings["service"]) * 1000,
        "raw_ms": statistics.median(timings["raw"]) * 1000,
        "service_commands": commands,
    }


def sync_reads(n: int, repeats: int) -> dict[str, Any]:
    """The sync forms, as a view, the admin or a Celery task calls them.

    Each is timed against the same raw command on a plain blocking redis-py client (the
    baseline), interleaved, median of ``repeats``. Also counts the Redis connections opened
    by the service's sync calls (0 once its shared pool is warm).
    """
    import redis
    from django.conf import settings

    from django_presence.backends import get_backend
    from django_presence.services.online import user_online_service

    backend: Any = get_backend()
    key = backend._keys[1]  # the "online" hash
    ids = list(range(1, n + 1))
    keys = [str(i) for i in ids]
    calls = 200  # single reads per timing
    raw_client = redis.Redis.from_url(settings.REDIS_URL)

    def opened() -> int:
        return int(raw_client.info("stats")["total_connections_received"])

    def one_service() -> None:
        for _ in range(calls):
            user_online_service.is_user_online(1)

    def one_raw() -> None:
        for _ in range(calls):
            raw_client.hexists(key, "1")

    def many_service() -> None:
        user_online_service.get_online_user_ids(ids)

    def many_raw() -> None:
        values = raw_client.hmget(key, keys)
        {i for i, v in zip(ids, values, strict=True) if v is not None}

    assert user_online_service.get_online_user_ids(ids) == {
        i for i, v in zip(ids, raw_client.hmget(key, keys), strict=True) if v is not None
    }
    one_service()  # warm the shared pool
    before = opened()
    timings: dict[str, list[float]] = {
        "one_service": [],
        "one_raw": [],
        "many_service": [],
        "many_raw": [],
    }
    for _ in range(repeats):
        for name, call in (
            ("one_raw", one_raw),
            ("one_service", one_service),
            ("many_raw", many_raw),
            ("many_service", many_service),
        ):
            start = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - start)
    new_connections = opened() - before
    raw_client.close()
    med = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "sync_is_online_us": med["one_service"] / calls * 1e6,
        "raw_sync_hexists_us": med["one_raw"] / calls * 1e6,
        "sync_is_online_ratio": med["one_service"] / med["one_raw"],
        "sync_service_ms": med["many_service"] * 1000,
        "raw_sync_hmget_ms": med["many_raw"] * 1000,
        "sync_online_ids_ratio": med["many_service"] / med["many_raw"],
        "sync_new_connections": new_connections,
    }


def main() -> None:
    """Run the measurement named on the command line and print its JSON."""
    import django

    django.setup()
    command, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if command != "online-ids":
        raise SystemExit(f"unknown measurement {command!r}")
    result = asyncio.run(online_ids(n, repeats))
    result.update(sync_reads(n, max(5, repeats // 5)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
