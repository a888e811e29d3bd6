"""In-process measurements: ``python -m benchproject.micro online-ids N REPEATS``.

``online-ids``: ``user_online_service.aget_online_user_ids`` for N ids (half of them
online) against the one raw Redis command that answers the same question (HMGET of the
backend's ``online`` hash), on the same client; also the sync form. Prints JSON.
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


def sync_online_ids(n: int, repeats: int) -> dict[str, Any]:
    """The sync form, as a view or a Celery task calls it (one event loop per call)."""
    from django_presence.services.online import user_online_service

    ids = list(range(1, n + 1))
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        user_online_service.get_online_user_ids(ids)
        timings.append(time.perf_counter() - start)
    return {"sync_service_ms": statistics.median(timings) * 1000}


def main() -> None:
    """Run the measurement named on the command line and print its JSON."""
    import django

    django.setup()
    command, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if command != "online-ids":
        raise SystemExit(f"unknown measurement {command!r}")
    result = asyncio.run(online_ids(n, repeats))
    result.update(sync_online_ids(n, max(3, repeats // 5)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
