#!/usr/bin/env python3
"""What availability (issue 15) costs: presence updates, idle users, activity, memory.

    python benchmarks/availability.py                  # the full run (about a minute)
    python benchmarks/availability.py --smoke --json out.json   # a few seconds

Needs a Redis server (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``); it uses keys
under its own random prefixes (the presence backend's and the channel layer's) and
deletes them. Drives the package's services, ``Runtime`` and ``RedisBackend`` in one
process, with the real channels_redis layer; no sockets. Measured:

- ``update``: ``user_online_service.aset_connection_data`` of a user watched by W
  channels (the user's watchers group holds W members; W = 10 and 100), alternating
  between two activities so that every call changes the public presence and sends one
  ``status_changed``, against a raw ``group_send`` of the same event to the same group,
  in interleaved rounds; wall and CPU time per call (medians over rounds).
  Target (issue 15): at most 1.2x the raw send.
- ``beats``: one process's ``Runtime`` holding 10,000 connections of 10,000 users
  (``Runtime.beat()``, the sweep lock dropped before each beat as if an interval had
  passed): Redis requests per beat with ``IDLE_AFTER = 0`` (idle detection off), with
  ``IDLE_AFTER = 300`` and every user idle (before and after they turned away), and with
  1,000 of them active, each sending ``activity`` every 30 s at its own phase (what the
  JS client does) on a simulated clock, so that ``ACTIVITY_WRITE_INTERVAL`` (60 s) and
  ``HEARTBEAT_INTERVAL`` (15 s) play out over several minutes in a few seconds. Requests
  are counted in the process (every backend round trip, and the channel layer's
  ``ZCARD`` pipeline) and on the server (``INFO commandstats``: ``EVALSHA`` calls and
  every command run, inner ones included; server-wide, so another client of the same
  Redis would show there, not in the process's count). Target: idle users cost no more
  requests per beat than idle detection off; activity adds one per beat.
- ``sweep``: ``heartbeat_and_sweep`` of the 10,000 connections (two script calls of 5,000)
  with nothing due, against the same with 1,000 users turning away in that sweep:
  wall time, Redis server time, the longest call.
- ``memory``: ``MEMORY USAGE`` of every key under the prefix (and the keyspace's
  ``used_memory`` delta) for 10,000 online users with one connection each, without
  availability data, with a device and idle tracking, and with a status and its text too.

Every loop is bounded in count; the run stops with an error past ``--budget`` seconds.
Timing is reported, never asserted: ``tests/test_benchmark_smoke.py`` runs ``--smoke``
and checks the counts and the report's shape.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"bench-avail-{uuid.uuid4().hex[:8]}"
LAYER_PREFIX = f"bench-asgi-{uuid.uuid4().hex[:8]}"
LONG_TTL = 3600.0  # s: no lease expires during the run
IDLE = 300.0  # IDLE_AFTER when idle detection is on (the default)
HEARTBEAT = 15.0  # HEARTBEAT_INTERVAL (the default)
WRITE_INTERVAL = 60.0  # ACTIVITY_WRITE_INTERVAL (the default)
CLIENT_INTERVAL = 30.0  # the JS client's activityInterval (the default)
# The harness's own commands, left out of the server's counts.
HARNESS_COMMANDS = {"info", "del", "memory", "scan", "config|get", "ping"}


def base_settings(idle: float) -> dict[str, Any]:
    return {
        "BACKEND": "django_presence.backends.redis.RedisBackend",
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": PREFIX,
        "SYNC_USER_MODEL": False,
        "POLICY": "django_presence.policies.OpenPolicy",
        "IDLE_AFTER": idle,
        "HEARTBEAT_INTERVAL": HEARTBEAT,
        "ACTIVITY_WRITE_INTERVAL": WRITE_INTERVAL,
        "CONNECTION_TTL": LONG_TTL,
    }


def configure() -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-availability-secret-key-long-enough-0123456789abcdef",
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
        DJANGO_PRESENCE=base_settings(IDLE),
        USE_TZ=True,
    )
    django.setup()


class Budget:
    """Wall-clock bound of the whole run: ``check()`` raises once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def check(self, phase: str) -> None:
        spent = time.monotonic() - self.start
        if spent > self.seconds:
            raise RuntimeError(f"over the budget of {self.seconds:.0f} s before {phase}")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def channel_id(rng: random.Random) -> str:
    """A connection id of the form and length of a channels_redis channel name."""
    return f"specific.{rng.getrandbits(128):032x}!{rng.getrandbits(128):032x}"


class Requests:
    """Counts this process's Redis round trips: the backend's, and the watcher counts.

    Every backend call goes through ``RedisBackend._call`` (one round trip each, the
    scripts being loaded beforehand); the channel layer's only request during a beat is
    ``transitions.groups_with_members`` (one pipeline), and only when presence changed.
    """

    def __init__(self, backend: Any) -> None:
        from django_presence import transitions

        self.backend = 0
        self.layer = 0
        self.times: list[float] = []
        original = backend._call
        counter = self

        async def counted(operation: Callable[[], Awaitable[Any]]) -> Any:
            counter.backend += 1
            start = time.perf_counter()
            try:
                return await original(operation)
            finally:
                counter.times.append(time.perf_counter() - start)

        backend._call = counted
        self._groups_with_members = transitions.groups_with_members

        async def groups_with_members(layer: Any, names: Any) -> Any:
            counter.layer += 1
            return await self._groups_with_members(layer, names)

        transitions.groups_with_members = groups_with_members

    def restore(self) -> None:
        from django_presence import transitions

        transitions.groups_with_members = self._groups_with_members

    def snapshot(self) -> tuple[int, int]:
        self.times = []
        return self.backend, self.layer


class Server:
    """The harness's own client: INFO commandstats and memory, key scans."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def commandstats(self) -> dict[str, tuple[int, int]]:
        stats = await self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        }

    @staticmethod
    def delta(
        before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
    ) -> dict[str, tuple[int, int]]:
        out = {}
        for name, (calls, usec) in after.items():
            c0, u0 = before.get(name, (0, 0))
            if calls - c0 and name not in HARNESS_COMMANDS:
                out[name] = (calls - c0, usec - u0)
        return out

    async def keys(self, prefix: str) -> list[bytes]:
        pattern = prefix.replace("{", "\\{").replace("}", "\\}") + "*"
        return [k async for k in self.client.scan_iter(match=pattern, count=1000)]

    async def used_memory(self) -> int:
        return int((await self.client.info("memory"))["used_memory"])

    async def flush_layer(self, *, groups: bool = False) -> None:
        keys = [
            k
            async for k in self.client.scan_iter(match=f"{LAYER_PREFIX}*", count=1000)
            if groups or b":group:" not in k
        ]
        for start in range(0, len(keys), 500):
            await self.client.delete(*keys[start : start + 500])


def override(idle: float) -> Any:
    from django.test import override_settings

    return override_settings(DJANGO_PRESENCE=base_settings(idle))


# -- 1. a presence-data update against a raw group_send ----------------------------------------


async def update(
    watchers: int, count: int, rounds: int, server: Server, rng: random.Random
) -> dict[str, Any]:
    from channels.layers import get_channel_layer

    from django_presence import groups, transitions
    from django_presence.backends import ConnectionData, get_backend
    from django_presence.services import user_online_service

    pk = 1_000_000 + watchers
    key = str(pk)
    cid = channel_id(rng)
    backend = get_backend()
    await backend.add_connection(key, cid, ttl=LONG_TTL, data=ConnectionData(device="web"))
    layer = get_channel_layer()
    group = groups.watchers_group(pk)
    for i in range(watchers):
        await layer.group_add(group, f"{LAYER_PREFIX}.watcher{i}!x")
    data = {"page": "/projects/42/board", "tab": "overview"}
    activities = ["viewing:/projects/42/board", "viewing:/projects/42/files"]
    flip = [0]

    async def service() -> None:
        flip[0] ^= 1
        await user_online_service.aset_connection_data(
            pk, cid, device="web", activity=activities[flip[0]], data=data
        )

    await service()
    found = (await backend.availability([key]))[key]
    assert found.presence.activities == (activities[flip[0]],), found
    event = transitions.status_event(key, found.presence, found.seq, None)

    async def raw() -> None:
        await layer.group_send(group, dict(event))

    runs: dict[str, list[tuple[float, float]]] = {"service": [], "raw": []}
    await _timed(service, max(2, count // 10))  # warm connections and scripts
    await _timed(raw, max(2, count // 10))
    for round_ in range(rounds):
        order: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("service", service),
            ("raw", raw),
        ]
        if round_ % 2:
            order.reverse()
        for label, send in order:
            await server.flush_layer()
            runs[label].append(await _timed(send, count))
    await server.flush_layer()
    seq_after = (await backend.availability([key]))[key].seq
    # Where the difference goes: the backend's script alone, and the watcher count
    # (``transitions.groups_with_members``, one ZCARD) alone; medians of ``rounds`` blocks.
    values = [
        ConnectionData("web", a, json.dumps(data, separators=(",", ":"))) for a in activities
    ]

    async def script() -> None:
        flip[0] ^= 1
        await backend.set_connection_data(key, cid, values[flip[0]])

    async def count_watchers() -> None:
        await transitions.groups_with_members(layer, [group])

    parts = {}
    for label, part in (("backend_script", script), ("watcher_count", count_watchers)):
        blocks = [await _timed(part, count) for _ in range(rounds)]
        parts[label] = round(_median([b[0] for b in blocks]) * 1e6, 1)
    result: dict[str, Any] = {
        "watchers": watchers,
        "calls_per_round": count,
        "rounds": rounds,
        "event_bytes": len(json.dumps(event, separators=(",", ":"))),
        "announced": seq_after > found.seq,
        "parts_wall_us": parts,
    }
    for label, values in runs.items():
        result[f"{label}_wall_us"] = round(_median([v[0] for v in values]) * 1e6, 1)
        result[f"{label}_cpu_us"] = round(_median([v[1] for v in values]) * 1e6, 1)
        result[f"{label}_wall_us_rounds"] = [round(v[0] * 1e6, 1) for v in values]
    result["wall_ratio"] = round(result["service_wall_us"] / result["raw_wall_us"], 3)
    # The same from each round's pair: less sensitive to a slow stretch of the machine.
    result["wall_ratio_of_rounds"] = round(
        _median([s[0] / r[0] for s, r in zip(runs["service"], runs["raw"], strict=True)]), 3
    )
    result["cpu_ratio"] = round(result["service_cpu_us"] / result["raw_cpu_us"], 3)
    result["target_met"] = result["wall_ratio"] <= 1.2
    print(
        f"update, {watchers} watchers: service {result['service_wall_us']} us wall / "
        f"{result['service_cpu_us']} us CPU; raw group_send {result['raw_wall_us']} / "
        f"{result['raw_cpu_us']}; ratio wall {result['wall_ratio']}x (per round "
        f"{result['wall_ratio_of_rounds']}x), CPU "
        f"{result['cpu_ratio']}x (target 1.2x: {'met' if result['target_met'] else 'MISSED'}); "
        f"parts: {parts}",
        flush=True,
    )
    return result


async def update_requests(server: Server) -> dict[str, Any]:
    """Round trips and server commands of one update and of one raw send (W = 10 group)."""
    from channels.layers import get_channel_layer

    from django_presence import groups
    from django_presence.services import user_online_service

    pk = 1_000_010
    layer = get_channel_layer()
    backend_conns = await _user_connections(str(pk))
    cid = backend_conns[0]
    before = await server.commandstats()
    for i in range(10):
        await user_online_service.aset_connection_data(
            pk, cid, device="web", activity=f"viewing:/r{i % 2}"
        )
    mid = await server.commandstats()
    event = {"type": "presence.status", "user_id": str(pk), "pad": "x" * 200}
    for _ in range(10):
        await layer.group_send(groups.watchers_group(pk), dict(event))
    after = await server.commandstats()
    await server.flush_layer()

    def per_call(delta: dict[str, tuple[int, int]]) -> dict[str, float]:
        return {name: calls / 10 for name, (calls, _) in sorted(delta.items())}

    return {
        "service_commands_per_call": per_call(Server.delta(before, mid)),
        "raw_commands_per_call": per_call(Server.delta(mid, after)),
    }


async def _user_connections(key: str) -> list[str]:
    from django_presence.backends import get_backend

    return [c.connection_id for c in await get_backend().user_connections(key)]


async def _timed(send: Callable[[], Awaitable[None]], count: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await send()
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


# -- 2. beats of one process with idle and active users ----------------------------------------


async def load(
    users: int, *, idle: float, device: str, rng: random.Random
) -> list[tuple[str, str]]:
    """Connect ``users`` users, one connection each, as ``ws/user/`` connects would."""
    from django_presence.backends import ConnectionData, get_backend

    backend = get_backend()
    data = ConnectionData(device=device) if device else None
    pairs = [(str(i + 1), channel_id(rng)) for i in range(users)]
    for start in range(0, users, 200):
        await asyncio.gather(
            *(
                backend.add_connection(key, cid, ttl=LONG_TTL, data=data, idle=idle)
                for key, cid in pairs[start : start + 200]
            )
        )
    return pairs


async def beats(
    name: str,
    users: int,
    count: int,
    server: Server,
    rng: random.Random,
    *,
    idle: float,
    connect_idle: float | None = None,
    active: int = 0,
    tracker: Any = None,
) -> dict[str, Any]:
    """``count`` beats of a runtime holding ``users`` connections; requests per beat.

    ``connect_idle``: the idle period the users connect with (default ``idle``; a short
    one makes them turn away before the measured beats). ``active``: that many users send
    ``activity`` every ``CLIENT_INTERVAL`` (plus up to a second) simulated seconds, at their
    own phase. ``tracker``: the ``ActivityTracker`` class (default the package's).
    """
    from django_presence.availability import ActivityTracker
    from django_presence.backends import get_backend
    from django_presence.runtime import get_runtime

    with override(idle):
        backend = get_backend()
        await backend.clear()
        pairs = await load(
            users,
            idle=idle if connect_idle is None else connect_idle,
            device="web",
            rng=rng,
        )
        runtime = get_runtime()
        runtime.connections.clear()
        for key, cid in pairs:
            runtime.connections[cid] = key  # tracked, without starting the timer task
        clock = [0.0]
        runtime.activity = (tracker or ActivityTracker)(clock=lambda: clock[0])
        lock = backend._keys[5]
        counter = Requests(backend)
        try:
            if connect_idle is not None:
                await asyncio.sleep(connect_idle * 1.5)
            # Warm up: load the scripts; with a short connect_idle, let every user turn
            # away (the sweep takes 1,000 due users per beat).
            due_left: list[int] = []
            while True:
                await server.client.delete(lock)
                await runtime.beat()
                due_left.append(int(await server.client.zcard(backend._keys[7])))
                if connect_idle is None or not due_left[-1] or len(due_left) > 50:
                    break
            # Activity: each active user's first report, then one every CLIENT_INTERVAL.
            events: list[tuple[float, int, str]] = []
            for i in range(active):
                phase = rng.uniform(0, CLIENT_INTERVAL)
                events.append((phase, 1, pairs[i][0]))
            warmup_until = WRITE_INTERVAL + 2 * HEARTBEAT
            total = warmup_until + count * HEARTBEAT
            t = HEARTBEAT
            while t <= total + 1e-9:
                events.append((t, 0, ""))
                t += HEARTBEAT
            heapq.heapify(events)
            per_beat: list[dict[str, Any]] = []
            immediate = first_writes = interval_immediate = 0
            b0, l0 = counter.snapshot()
            s0 = await server.commandstats()
            while events:
                when, kind, key = heapq.heappop(events)
                clock[0] = when
                if kind == 1:  # an activity report
                    before = counter.backend
                    await runtime.note_activity(key)
                    if counter.backend != before:
                        if when < CLIENT_INTERVAL:
                            first_writes += 1
                        elif when > warmup_until:
                            immediate += 1
                            interval_immediate += 1
                    gap = CLIENT_INTERVAL + rng.uniform(0, 1)
                    heapq.heappush(events, (when + gap, 1, key))
                    continue
                await server.client.delete(lock)  # a full interval passed for the sweep
                if when <= warmup_until:
                    await runtime.beat()
                    b0, l0 = counter.snapshot()
                    s0 = await server.commandstats()
                    continue
                start = time.perf_counter()
                await runtime.beat()
                wall = time.perf_counter() - start
                b1, l1 = counter.backend, counter.layer
                s1 = await server.commandstats()
                delta = Server.delta(s0, s1)
                per_beat.append(
                    {
                        "backend_requests": b1 - b0,
                        "layer_requests": l1 - l0,
                        "evalsha": delta.get("evalsha", (0, 0))[0],
                        "server_commands": sum(c for c, _ in delta.values()),
                        "server_usec": sum(u for _, u in delta.values()),
                        "wall_ms": wall * 1000,
                        "immediate": interval_immediate,
                    }
                )
                interval_immediate = 0
                b0, l0 = counter.snapshot()
                s0 = await server.commandstats()
                if when >= total - 1e-9:
                    break
        finally:
            counter.restore()
            runtime.connections.clear()
        state = await _states(backend, [key for key, _ in pairs])
    n = len(per_beat)
    requests = [b["backend_requests"] + b["layer_requests"] for b in per_beat]
    result = {
        "name": name,
        "users": users,
        "connections": len(pairs),
        "idle_after": idle,
        "active": active,
        "beats": n,
        "simulated_seconds": n * HEARTBEAT,
        # Everything this process sent to Redis during the measured intervals, the
        # activity reports' own writes included.
        "requests_per_beat": round(sum(requests) / n, 2),
        "requests_per_beat_max": max(requests),
        "beat_requests_per_beat": round(
            sum(r - b["immediate"] for r, b in zip(requests, per_beat, strict=True)) / n,
            2,
        ),
        "immediate_writes": immediate,
        "immediate_writes_per_beat": round(immediate / n, 2),
        "first_activity_writes": first_writes,
        "evalsha_per_beat": round(sum(b["evalsha"] for b in per_beat) / n, 2),
        "server_commands_per_beat": round(sum(b["server_commands"] for b in per_beat) / n, 1),
        "server_ms_per_beat": round(sum(b["server_usec"] for b in per_beat) / n / 1000, 2),
        "beat_wall_ms_median": round(_median([b["wall_ms"] for b in per_beat]), 2),
        "states": state,
        # Users still waiting to turn away after each warm-up beat.
        "due_after_warmup_beats": due_left,
        "per_beat": per_beat,
    }
    print(
        f"beats, {name}: {result['requests_per_beat']} requests per beat "
        f"(max {result['requests_per_beat_max']}; of which immediate activity writes "
        f"{result['immediate_writes_per_beat']}); EVALSHA {result['evalsha_per_beat']}, "
        f"{result['server_commands_per_beat']} commands and {result['server_ms_per_beat']} ms "
        f"of Redis per beat; beat {result['beat_wall_ms_median']} ms; states {state}",
        flush=True,
    )
    return result


def deferred_tracker() -> Any:
    """A what-if ``ActivityTracker`` (not the package's): writes at once only after a quiet spell.

    The package's writes a user's activity at once whenever their last write is older
    than ``ACTIVITY_WRITE_INTERVAL``; a client reporting every 30 s hits that boundary
    with nearly every other report, before the beat could take it. This one also leaves
    it to the beat when the user has activity waiting (they were not quiet), so only a
    user coming back from a quiet spell (who may be away) is written at once.
    """
    from django_presence.availability import ActivityTracker

    class Deferred(ActivityTracker):
        def note(self, user_key: str) -> bool:
            if user_key in self._pending:
                self._pending[user_key] = self._clock()
                return False
            return super().note(user_key)

    return Deferred


async def _states(backend: Any, keys: list[str]) -> dict[str, int]:
    found = await backend.availability(keys)
    states: dict[str, int] = {}
    for a in found.values():
        states[a.presence.state] = states.get(a.presence.state, 0) + 1
    return states


# -- 2b. the beat's scripts with and without due away-transitions ------------------------------


async def sweep_cost(
    users: int, turning: int, rounds: int, server: Server, rng: random.Random
) -> dict[str, Any]:
    """``heartbeat_and_sweep`` of ``users`` connections, nothing due vs ``turning`` due."""
    from django_presence.backends import get_backend

    with override(IDLE):
        backend = get_backend()
        await backend.clear()
        pairs = await load(users, idle=IDLE, device="web", rng=rng)
        turners = [key for key, _ in pairs[:turning]]
        counter = Requests(backend)
        runs: dict[str, list[dict[str, float]]] = {"nothing due": [], "due": []}
        try:
            await backend.heartbeat_and_sweep(pairs, ttl=LONG_TTL)  # load the scripts
            for round_ in range(rounds):
                order = ["nothing due", "due"] if round_ % 2 == 0 else ["due", "nothing due"]
                for label in order:
                    if label == "due":
                        # Active a moment ago, away 50 ms later: due at this beat's sweep.
                        changed = await backend.touch([(k, 0.0) for k in turners], idle=0.05)
                        await asyncio.sleep(0.15)
                    counter.snapshot()
                    s0 = await server.commandstats()
                    start = time.perf_counter()
                    _, swept = await backend.heartbeat_and_sweep(pairs, ttl=LONG_TTL)
                    wall = time.perf_counter() - start
                    s1 = await server.commandstats()
                    delta = Server.delta(s0, s1)
                    away = sum(
                        1 for c in swept.changes if c.presence and c.presence.state == "away"
                    )
                    if label == "due":
                        assert away == turning, (away, turning, len(changed))
                    runs[label].append(
                        {
                            "wall_ms": wall * 1000,
                            "longest_call_ms": max(counter.times) * 1000,
                            "calls": len(counter.times),
                            "server_ms": delta.get("evalsha", (0, 0))[1] / 1000,
                            "server_commands": sum(c for c, _ in delta.values()),
                            "away": away,
                        }
                    )
        finally:
            counter.restore()
    result: dict[str, Any] = {"connections": users, "turning_away": turning, "rounds": rounds}
    for label, values in runs.items():
        result[label] = {name: round(_median([v[name] for v in values]), 2) for name in values[0]}
    nothing, due = result["nothing due"], result["due"]
    print(
        f"sweep, {users} connections: nothing due {nothing['wall_ms']} ms wall, "
        f"{nothing['server_ms']} ms Redis, longest call {nothing['longest_call_ms']} ms; "
        f"{turning} turning away {due['wall_ms']} ms, {due['server_ms']} ms Redis, "
        f"longest call {due['longest_call_ms']} ms ({due['calls']:.0f} calls)",
        flush=True,
    )
    return result


# -- 3. memory per online user -------------------------------------------------------------------


async def memory(users: int, server: Server, rng: random.Random) -> dict[str, Any]:
    from django_presence.backends import get_backend

    configs = [
        ("no availability data", 0.0, "", None),
        ("idle tracking only (IDLE_AFTER 300, the default)", IDLE, "", None),
        ("device, idle tracking", IDLE, "web", None),
        ("device, idle tracking, busy with a text", IDLE, "web", "busy"),
    ]
    result: dict[str, Any] = {"users": users, "configs": {}}
    for name, idle, device, status in configs:
        with override(idle):
            backend = get_backend()
            await backend.clear()
            await server.client.execute_command("MEMORY", "PURGE")
            before = await server.used_memory()
            pairs = await load(users, idle=idle, device=device, rng=rng)
            if status:
                for start in range(0, users, 200):
                    await asyncio.gather(
                        *(
                            backend.set_status(key, status, text="In a meeting until 3")
                            for key, _ in pairs[start : start + 200]
                        )
                    )
            after = await server.used_memory()
            keys = await server.keys("{" + PREFIX + "}:")
            sizes: dict[str, int] = {}
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                async with server.client.pipeline(transaction=False) as pipe:
                    for k in chunk:
                        pipe.execute_command("MEMORY", "USAGE", k, "SAMPLES", "0")
                    usages = await pipe.execute()
                for k, usage in zip(chunk, usages, strict=True):
                    kind = _key_kind(k.decode())
                    sizes[kind] = sizes.get(kind, 0) + int(usage or 0)
            total = sum(sizes.values())
            sample = "{" + PREFIX + "}:a:" + pairs[0][0]
            encoding = await server.client.object("encoding", sample)
            result["configs"][name] = {
                "keys": len(keys),
                "memory_usage_bytes": total,
                "bytes_per_user": round(total / users, 1),
                "used_memory_delta": after - before,
                "used_memory_per_user": round((after - before) / users, 1),
                "by_key": sizes,
                # How Redis stores a user's availability hash (None: the user has none).
                "a_encoding": encoding.decode() if encoding else None,
            }
            print(
                f"memory, {name}: {result['configs'][name]['bytes_per_user']} B per user "
                f"(MEMORY USAGE of {len(keys)} keys; used_memory delta "
                f"{result['configs'][name]['used_memory_per_user']} B per user); {sizes}",
                flush=True,
            )
    names = [c[0] for c in configs]
    base = result["configs"][names[0]]["bytes_per_user"]
    for name in names[1:]:
        result["configs"][name]["extra_per_user"] = round(
            result["configs"][name]["bytes_per_user"] - base, 1
        )
    return result


def _key_kind(key: str) -> str:
    rest = key.split("}:", 1)[1]
    if rest.startswith("u:"):
        return "u:<user>"
    if rest.startswith("a:"):
        return "a:<user>"
    return rest


# -- the run -------------------------------------------------------------------------------------


def versions(info: dict[str, Any]) -> dict[str, str]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "redis-server": str(info["redis_version"]),
        "redis-py": version("redis"),
        "channels_redis": version("channels_redis"),
        "django-user-presence": version("django-user-presence"),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from django_presence.backends import get_backend

    budget = Budget(args.budget)
    smoke = args.smoke
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=60)
    server = Server(client)
    rng = random.Random(15)
    users = 200 if smoke else args.users
    active = users // 10
    report: dict[str, Any] = {
        "parameters": {
            "users": users,
            "active": active,
            "idle_after": IDLE,
            "heartbeat_interval": HEARTBEAT,
            "activity_write_interval": WRITE_INTERVAL,
            "client_activity_interval": CLIENT_INTERVAL,
            "smoke": smoke,
        },
        "versions": versions(await client.info("server")),
        "machine": {"cores": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
    }
    started = time.monotonic()
    try:
        rounds = 2 if smoke else max(5, args.rounds)
        report["update"] = {}
        for watchers in (10,) if smoke else (10, 100):
            budget.check(f"update, {watchers} watchers")
            # About as long a round for each size (a send to 100 channels takes ~3x).
            count = 20 if smoke else max(10, args.calls if watchers <= 10 else args.calls // 3)
            report["update"][str(watchers)] = await update(watchers, count, rounds, server, rng)
        report["update_commands"] = await update_requests(server)
        nbeats = 6 if smoke else args.beats
        runs = [
            ("IDLE_AFTER=0", {"idle": 0.0}),
            ("IDLE_AFTER=300, all idle", {"idle": IDLE}),
            ("IDLE_AFTER=300, all idle and away", {"idle": IDLE, "connect_idle": 0.2}),
            (f"IDLE_AFTER=300, {active} active", {"idle": IDLE, "active": active}),
            (
                f"IDLE_AFTER=300, {active} active, what-if deferred writes",
                {"idle": IDLE, "active": active, "tracker": deferred_tracker()},
            ),
        ]
        report["beats"] = {}
        for name, options in runs:
            budget.check(f"beats, {name}")
            report["beats"][name] = await beats(name, users, nbeats, server, rng, **options)
        budget.check("sweep")
        report["sweep"] = await sweep_cost(
            users, users // 10, 2 if smoke else args.rounds, server, rng
        )
        budget.check("memory")
        report["memory"] = await memory(users, server, rng)
    finally:
        with override(IDLE):
            await get_backend().clear()
        await server.flush_layer(groups=True)
        await client.aclose()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    beats = report["beats"]
    off = beats["IDLE_AFTER=0"]["requests_per_beat"]
    idle = max(
        beats["IDLE_AFTER=300, all idle"]["requests_per_beat"],
        beats["IDLE_AFTER=300, all idle and away"]["requests_per_beat"],
    )
    active = next(v for k, v in beats.items() if k.endswith(" active"))["requests_per_beat"]
    return {
        "update_wall_ratio_max": 1.2,
        "update_met": {w: r["target_met"] for w, r in report["update"].items()},
        "idle_no_more_requests_met": idle <= off,
        "active_at_most_one_more_request_met": active <= off + 1,
    }


def table(report: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for w, r in report["update"].items():
        rows.append(
            (
                f"presence update, {w} watchers: service / raw `group_send` (wall, CPU)",
                f"{r['service_wall_us']} / {r['raw_wall_us']} us: {r['wall_ratio']}x; "
                f"CPU {r['cpu_ratio']}x (<= 1.2x: {'met' if r['target_met'] else 'missed'})",
            )
        )
    for name, b in report["beats"].items():
        rows.append(
            (
                f"beat of {b['connections']} connections, {name}: requests per beat",
                f"{b['requests_per_beat']} (max {b['requests_per_beat_max']}, immediate "
                f"activity writes {b['immediate_writes_per_beat']}); "
                f"{b['server_commands_per_beat']} commands, {b['server_ms_per_beat']} ms of Redis",
            )
        )
    s = report["sweep"]
    for label in ("nothing due", "due"):
        v = s[label]
        rows.append(
            (
                f"heartbeat_and_sweep of {s['connections']}, {label}"
                + (f" ({s['turning_away']} turn away)" if label == "due" else ""),
                f"{v['wall_ms']} ms wall, {v['server_ms']} ms Redis, longest call "
                f"{v['longest_call_ms']} ms",
            )
        )
    for name, m in report["memory"]["configs"].items():
        rows.append(
            (
                f"Redis memory per online user, {name}",
                f"{m['bytes_per_user']} B"
                + (f" (+{m['extra_per_user']})" if "extra_per_user" in m else ""),
            )
        )
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks it runs")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--calls", type=int, default=400, help="updates per round (W=10; 100 has a third)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="at least 5")
    parser.add_argument("--beats", type=int, default=12, help="measured beats per run")
    parser.add_argument("--budget", type=float, default=300.0, help="s; stop past it")
    parser.add_argument("--json", type=Path, help="write the report here")
    options = parser.parse_args()
    configure()
    result = asyncio.run(main(options))
    print(table(result))
    print(f"targets: {result['targets']}")
    print(f"{result['seconds']:.0f} s; load average {result['machine']['loadavg_end']}")
    if options.json:
        options.json.write_text(json.dumps(result, indent=2, default=str))
