"""The per-process heartbeat: leases kept alive, crashed processes swept, one round trip.

A "process" here is an event loop with its own :class:`~django_presence.runtime.Runtime`
(one per loop, as in a server process); a crash is a loop that stops without removing its
connections, so its heartbeat stops and nothing else tells the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.backends import get_backend
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend
from django_presence.exceptions import BackendUnavailable
from django_presence.runtime import SWEEP_LIMIT, Runtime, get_runtime
from django_presence.services import user_online_service
from django_presence.signals import user_offline

from .conftest import CommandCounter, SignalLog, presence_settings_for

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()

TTL = 1.0
INTERVAL = 0.3
DEADLINE = 30.0


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> float:
    """Wait for ``condition``; return when it first held (``time.monotonic()``)."""
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"Not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic()


@pytest.fixture
async def fast(presence: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Short leases and intervals; stops this loop's heartbeat task after the test."""
    settings_dict = {
        **presence,
        "CONNECTION_TTL": TTL,
        "HEARTBEAT_INTERVAL": INTERVAL,
        "OFFLINE_GRACE_PERIOD": 0,
    }
    with override_settings(DJANGO_PRESENCE=settings_dict):
        try:
            yield settings_dict
        finally:
            await stop_heartbeat(get_runtime())
            await get_backend().aclose()


async def stop_heartbeat(heartbeat: Runtime, *, forget: bool = True) -> None:
    """Stop the timer of ``heartbeat`` and, with ``forget``, forget its connections."""
    await heartbeat.stop(forget=forget)


async def connect(user_id: Any) -> str:
    """What the consumer mixin does on accept: track, then register."""
    from django_presence.ids import new_connection_id

    cid = new_connection_id()
    get_runtime().track_connection(str(user_id), cid)
    await user_online_service.aadd_user_connection(user_id, cid)
    return cid


async def disconnect(user_id: Any, cid: str) -> None:
    """What the consumer mixin does when the consumer ends: untrack, then remove."""
    get_runtime().untrack_connection(cid)
    await user_online_service.aremove_user_connection(user_id, cid)


def db_online(pk: Any) -> bool:
    return bool(User.objects.get(pk=pk).is_online)


class OtherProcess:
    """A second server process: its own thread and event loop, the same backend and DB."""

    def __init__(self, user_id: Any) -> None:
        self.user_id = user_id
        self.registered = threading.Event()
        self.died_at = 0.0
        self._die = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),))
        self.error: BaseException | None = None

    async def _main(self) -> None:
        try:
            await connect(self.user_id)
            self.registered.set()
            await asyncio.to_thread(self._die.wait, DEADLINE * 4)
            # The process dies: its heartbeat stops at once, its connections stay stored.
            await stop_heartbeat(get_runtime())
            self.died_at = time.monotonic()
            await get_backend().aclose()
        except BaseException as e:
            self.error = e
            self.registered.set()

    def start(self) -> None:
        self._thread.start()
        assert self.registered.wait(DEADLINE)
        assert self.error is None, self.error

    def crash(self) -> float:
        self._die.set()
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive()
        assert self.error is None, self.error
        return self.died_at


async def test_heartbeat_keeps_connections_alive_beyond_their_ttl(
    fast: dict[str, Any], signal_log: SignalLog
) -> None:
    user = await database_sync_to_async(User.objects.create_user)("alice")
    await connect(user.pk)
    assert dict(get_runtime().connections) == {next(iter(get_runtime().connections)): str(user.pk)}

    # Three whole leases pass; the heartbeat task (which also sweeps) keeps the user online.
    end = time.monotonic() + 3 * TTL
    while time.monotonic() < end:
        assert await user_online_service.ais_user_online(user.pk)
        await asyncio.sleep(0.05)

    assert signal_log.kinds() == ["online"]


async def test_a_crashed_process_users_go_offline_within_ttl_plus_interval(
    fast: dict[str, Any], signal_log: SignalLog, backend_name: str
) -> None:
    crashed_user, live_user = await database_sync_to_async(
        lambda: [User.objects.create_user(name) for name in ("crashed", "live")]
    )()
    other = OtherProcess(crashed_user.pk)
    other.start()
    await connect(live_user.pk)  # Starts this process's heartbeat, which sweeps.
    assert await user_online_service.ais_user_online(crashed_user.pk)
    assert await database_sync_to_async(db_online)(crashed_user.pk)

    died_at = other.crash()

    async def offline_everywhere() -> bool:
        return (
            not await user_online_service.ais_user_online(crashed_user.pk)
            and not await database_sync_to_async(db_online)(crashed_user.pk)
            and signal_log.of(crashed_user.pk) == ["online", "offline"]
        )

    offline_at = await eventually(offline_everywhere, "the crashed process's user offline")
    elapsed = offline_at - died_at
    print(
        f"\n[{backend_name}] crashed user offline {elapsed:.2f} s after the crash; "
        f"bound CONNECTION_TTL + HEARTBEAT_INTERVAL = {TTL + INTERVAL:.2f} s"
    )
    assert await user_online_service.ais_user_online(live_user.pk)
    assert signal_log.of(live_user.pk) == ["online"]
    crashed = await database_sync_to_async(User.objects.get)(pk=crashed_user.pk)
    assert crashed.last_seen is not None


async def test_backend_lost_everything_next_beat_registers_all_again(
    fast: dict[str, Any], signal_log: SignalLog
) -> None:
    users = await database_sync_to_async(
        lambda: [User.objects.create_user(f"u{i}") for i in range(3)]
    )()
    cids = [await connect(u.pk) for u in users]
    await connect(users[0].pk)  # A second tab.
    await get_runtime().beat()
    signal_log.clear()

    await get_backend().clear()  # Redis restarted without persistence.
    assert await user_online_service.aget_online_user_ids([u.pk for u in users]) == set()

    await get_runtime().beat()

    assert await user_online_service.aget_online_user_ids([u.pk for u in users]) == {
        u.pk for u in users
    }
    assert await user_online_service.aget_user_connection_count(users[0].pk) == 2
    assert sorted(signal_log.kinds()) == ["online"] * 3
    assert all([await database_sync_to_async(db_online)(u.pk) for u in users])
    for user, cid in zip(users, cids, strict=True):
        infos = await get_backend().user_connections(str(user.pk))
        assert cid in {i.connection_id for i in infos}


class _Gated:
    """A real backend whose heartbeat waits at a gate, to hold it "in flight"."""

    gate: asyncio.Event | None = None
    waiting: asyncio.Event | None = None

    async def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        if _Gated.gate is not None and _Gated.waiting is not None:
            _Gated.waiting.set()
            await _Gated.gate.wait()
        return await super().heartbeat(*args, **kwargs)  # type: ignore[misc]


class GatedMemoryBackend(_Gated, MemoryBackend):
    """The memory backend with a gated heartbeat."""


class GatedRedisBackend(_Gated, RedisBackend):
    """The Redis backend with a gated heartbeat."""


@pytest.mark.parametrize("grace", [0, 0.3])
async def test_a_connection_removed_during_a_heartbeat_is_not_resurrected(
    fast: dict[str, Any], signal_log: SignalLog, backend_name: str, grace: float
) -> None:
    path = f"tests.test_heartbeat.Gated{backend_name.capitalize()}Backend"
    with override_settings(
        DJANGO_PRESENCE={**fast, "BACKEND": path, "OFFLINE_GRACE_PERIOD": grace}
    ):
        user = await database_sync_to_async(User.objects.create_user)("alice")
        cid = await connect(user.pk)
        heartbeat = get_runtime()
        # Only the beat below runs: the periodic one would race the gate.
        await stop_heartbeat(heartbeat, forget=False)
        _Gated.gate, _Gated.waiting = asyncio.Event(), asyncio.Event()
        try:
            beat = asyncio.ensure_future(heartbeat.beat())
            await asyncio.wait_for(_Gated.waiting.wait(), DEADLINE)
            # The heartbeat holds the pair; the socket closes now and removes it first.
            await disconnect(user.pk, cid)
            _Gated.gate.set()
            await asyncio.wait_for(beat, DEADLINE)
        finally:
            _Gated.gate = _Gated.waiting = None

        async def gone() -> bool:
            await user_online_service.asweep()
            return not await user_online_service.ais_user_online(user.pk)

        await eventually(gone, "the removed connection gone")
        assert await get_backend().user_connections(str(user.pk)) == []
        assert not await database_sync_to_async(db_online)(user.pk)
        kinds = signal_log.of(user.pk)
        assert kinds[-1] == "offline"
        assert kinds == ["online", "offline"] * (len(kinds) // 2)
        await stop_heartbeat(heartbeat)


@pytest.mark.parametrize("connections", [0, 10, 1000])
async def test_one_round_trip_heartbeats_every_connection(
    command_counter: CommandCounter, private_redis: str, connections: int
) -> None:
    """Per interval: one EVALSHA heartbeats all N connections and sweeps; nothing else."""
    # The undelivered hand-over (one more request, on beats that swept) is another
    # matter: tests/test_delivery.py counts it.
    settings_dict = presence_settings_for(
        "redis",
        private_redis,
        SYNC_USER_MODEL=False,
        HEARTBEAT_INTERVAL=INTERVAL,
        UNDELIVERED_AFTER=None,
    )
    with override_settings(DJANGO_PRESENCE=settings_dict):
        heartbeat = Runtime()  # Not started: beat() is called by hand.
        pairs = [(str(i % 97), f"c{i}") for i in range(connections)]
        await get_backend().heartbeat(pairs, ttl=30, server=heartbeat.server)
        heartbeat.connections.update({cid: uid for uid, cid in pairs})
        # Loads the scripts into the server's cache; the lease was not confirmed yet, so
        # this beat also files every connection again (one more request).
        await heartbeat.beat()
        command_counter.reset()

        for _ in range(3):
            await heartbeat.beat()

        counts = command_counter.counts(settings_dict["KEY_PREFIX"])
        print(f"\n{connections} connections, 3 beats: {counts}")
        assert counts == {"evalsha": 3}
        await get_backend().aclose()


async def test_a_process_whose_lease_was_swept_registers_again_at_its_next_beat(
    fast: dict[str, Any], signal_log: SignalLog
) -> None:
    """A pause longer than the lease: swept as dead, then back online at the next beat."""
    users = await database_sync_to_async(
        lambda: [User.objects.create_user(f"u{i}") for i in range(2)]
    )()
    for user in users:
        await connect(user.pk)
    runtime = get_runtime()
    await runtime.beat()
    await stop_heartbeat(runtime, forget=False)  # The process pauses (a long GC, a partition).
    signal_log.clear()
    await asyncio.sleep(TTL + 0.1)
    await user_online_service.asweep()  # Another process sweeps it as dead.
    assert await user_online_service.aget_online_user_ids([u.pk for u in users]) == set()

    await runtime.beat()  # It resumes: the backend says its lease was lost.

    assert await user_online_service.aget_online_user_ids([u.pk for u in users]) == {
        u.pk for u in users
    }
    assert sorted(signal_log.kinds()) == ["offline", "offline", "online", "online"]
    assert all([await database_sync_to_async(db_online)(u.pk) for u in users])
    await runtime.beat()  # Held again: nothing more happens.
    assert len(signal_log.kinds()) == 4


async def test_a_lease_that_expired_unswept_is_renewed_without_a_transition(
    fast: dict[str, Any], signal_log: SignalLog
) -> None:
    user = await database_sync_to_async(User.objects.create_user)("alice")
    await connect(user.pk)
    runtime = get_runtime()
    await runtime.beat()
    await stop_heartbeat(runtime, forget=False)
    signal_log.clear()
    await asyncio.sleep(TTL + 0.1)  # Expired, and nobody swept meanwhile.

    await runtime.beat()  # Renews first, then sweeps: its own connection is not swept.
    await user_online_service.asweep()

    assert await user_online_service.ais_user_online(user.pk)
    assert signal_log.kinds() == []


async def test_a_connection_whose_removal_failed_is_swept_after_a_rotation(
    fast: dict[str, Any], signal_log: SignalLog
) -> None:
    """Its record outlives it under the lease: the next beat retires it, a sweep drops it."""
    stays, leaves = await database_sync_to_async(
        lambda: [User.objects.create_user(name) for name in ("stays", "leaves")]
    )()
    await connect(stays.pk)
    cid = await connect(leaves.pk)
    runtime = get_runtime()
    await runtime.beat()
    signal_log.clear()
    # What the mixin does when the backend refused the removal: untracked, record kept.
    runtime.untrack_connection(cid)
    runtime.removal_failed()

    async def gone() -> bool:
        # Offline in the backend, and the transition's side effects applied.
        return not await user_online_service.ais_user_online(leaves.pk) and bool(
            signal_log.kinds()
        )

    start = time.monotonic()
    await eventually(gone, "the connection whose removal failed swept")
    # Retired at the next beat, removable a lease later, swept at the beat after that.
    assert time.monotonic() - start <= TTL + 3 * INTERVAL + 1
    assert await user_online_service.ais_user_online(stays.pk)
    assert signal_log.kinds() == ["offline"]
    assert signal_log.of(leaves.pk) == ["offline"]


async def test_one_beat_sweeps_a_big_crash_entirely(
    fast: dict[str, Any], signal_log: SignalLog
) -> None:
    """More expired leases than one sweep takes: the same beat keeps sweeping."""
    count = SWEEP_LIMIT * 2 + 5
    with override_settings(DJANGO_PRESENCE={**fast, "SYNC_USER_MODEL": False}):
        backend = get_backend()
        await backend.heartbeat([(str(10_000 + i), "c") for i in range(count)], ttl=0.1)
        await asyncio.sleep(0.2)

        await Runtime().beat()

        assert await backend.all_online_user_ids() == set()
    assert signal_log.kinds() == ["offline"] * count


async def test_users_a_sweep_took_offline_are_announced_though_a_later_call_fails(
    fast: dict[str, Any], signal_log: SignalLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each sweep call's transitions are queued as it returns, not after the last call.

    A big crash is swept in many calls within one beat; the users the first call took
    offline get their signal and DB write even when a later call fails (Redis went away
    mid-beat), rather than being removed from the backend without a word.
    """
    count = SWEEP_LIMIT * 2 + 5
    with override_settings(DJANGO_PRESENCE={**fast, "SYNC_USER_MODEL": False}):
        backend = get_backend()
        await backend.heartbeat([(str(10_000 + i), "c") for i in range(count)], ttl=0.1)
        await asyncio.sleep(0.2)
        # The beat's calls: its renewal and first sweep, then one more call per batch.
        sweep, calls = backend.renew_server_and_sweep, []

        async def failing_third_call(server: str, **kwargs: Any) -> Any:
            calls.append(kwargs)
            if len(calls) == 3:
                raise BackendUnavailable("Redis went away")
            return await sweep(server, **kwargs)

        monkeypatch.setattr(backend, "renew_server_and_sweep", failing_third_call)
        runtime = Runtime()

        with pytest.raises(BackendUnavailable):
            await runtime.beat()
        left = await backend.all_online_user_ids()

        async def announced() -> bool:
            # Every signal, and the batcher done (its watchers' messages sent too).
            applier = runtime.batcher._applier
            return len(signal_log.kinds()) == count - len(left) and applier is None

        await eventually(announced, "the first calls' users announced")
    assert len(calls) == 3
    assert 0 < count - len(left) < count  # the beat's own sweep and one call took some
    assert set(signal_log.kinds()) == {"offline"}


async def test_a_beat_applying_a_big_sweep_keeps_its_own_lease(
    fast: dict[str, Any], signal_log: SignalLog
) -> None:
    """A sweep's side effects outlasting the lease: the lease is renewed while they apply.

    A dead server's users take two leases to apply here (a slow receiver); meanwhile
    another process sweeps: the users still connected to this one stay online.
    """
    stays = await database_sync_to_async(User.objects.create_user)("stays")
    await connect(stays.pk)
    runtime = get_runtime()
    await runtime.beat()
    await stop_heartbeat(runtime, forget=False)  # beats are run by hand below
    dead = 10_000
    backend = get_backend()
    await backend.heartbeat([(str(dead), "c")], ttl=0.1)  # a crashed server's connection
    await asyncio.sleep(INTERVAL)  # expired, and the last beat's sweep lock too
    signal_log.clear()

    def slow_receiver(sender: Any, user_id: Any, **kwargs: Any) -> None:
        if user_id == dead:
            time.sleep(2 * TTL)  # a slow receiver (a sync one: its own thread)

    user_offline.connect(slow_receiver, dispatch_uid="slow")
    try:
        beat = asyncio.get_running_loop().create_task(runtime.beat())
        await asyncio.sleep(TTL + INTERVAL)  # this beat's renewal would have expired
        assert not beat.done()
        other_sweep = await backend.sweep(limit=SWEEP_LIMIT)  # another process sweeps
        await beat
    finally:
        user_offline.disconnect(dispatch_uid="slow")

    assert other_sweep.removed == 0
    assert await user_online_service.ais_user_online(stays.pk)
    assert signal_log.kinds() == ["offline"]
    assert signal_log.of(dead) == ["offline"]
    await runtime.beat()  # the lease was held all along: nothing to file again
    assert signal_log.kinds() == ["offline"]


def test_a_finished_loop_and_its_heartbeat_are_freed(presence: dict[str, Any]) -> None:
    import gc
    import weakref

    refs: list[weakref.ref[Any]] = []

    async def serve_and_stop() -> None:
        get_runtime().track_connection("1", "c")
        refs.append(weakref.ref(asyncio.get_running_loop()))
        refs.append(weakref.ref(get_runtime()))
        await get_backend().aclose()

    asyncio.run(serve_and_stop())  # Cancels the heartbeat task and closes the loop.
    gc.collect()

    assert [ref() for ref in refs] == [None, None]


def test_the_cached_pairs_follow_every_change_of_the_tracked_connections() -> None:
    """An idle beat reuses one list of pairs; any change to the connections rebuilds it."""
    heartbeat = Runtime()
    connections = heartbeat.connections
    connections["c1"] = "1"
    first = connections.pairs()
    assert first == [("1", "c1")]
    assert connections.pairs() is first  # nothing changed: no allocation per beat
    connections["c2"] = "2"
    assert sorted(connections.pairs()) == [("1", "c1"), ("2", "c2")]
    heartbeat.untrack_connection("c1")
    assert connections.pairs() == [("2", "c2")]
    connections.update({"c3": "3"})
    connections.setdefault("c4", "4")
    del connections["c2"]
    assert sorted(connections.pairs()) == [("3", "c3"), ("4", "c4")]
    connections.popitem()
    assert len(connections.pairs()) == 1
    connections.clear()
    assert connections.pairs() == []


async def test_stop_ends_the_timer_even_when_a_beat_lost_its_cancellation() -> None:
    """A cancellation swallowed inside a beat must not leave stop() waiting a whole interval.

    On Python 3.11, ``asyncio.wait_for`` (in redis-py) can swallow a cancellation that
    arrives as its inner call completes; the timer then went on to sleep a full
    ``HEARTBEAT_INTERVAL`` and beat again, and ``stop()`` waited for it forever.
    """
    in_beat = asyncio.Event()
    beats = 0

    class LosesOneCancellation(Runtime):
        async def beat(self) -> None:
            nonlocal beats
            beats += 1
            in_beat.set()
            # What a library that swallowed the cancellation does: carry on.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    settings_dict = presence_settings_for("memory", "", HEARTBEAT_INTERVAL=0.05)
    with override_settings(DJANGO_PRESENCE=settings_dict):
        runtime = LosesOneCancellation()
        runtime.track_connection("1", "c1")
        await asyncio.wait_for(in_beat.wait(), 5)
    # The settings' interval is back to the default (seconds): only a second
    # cancellation ends the timer's sleep. (Not wait_for(): cancelling stop() on its
    # timeout would cancel the timer a second time, and hide the hang.)
    stopping = asyncio.ensure_future(runtime.stop())
    done, _ = await asyncio.wait({stopping}, timeout=2)

    try:
        assert stopping in done, "stop() still waits for a timer that lost its cancellation"
        assert not runtime.running
        assert beats == 1
    finally:
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=5)
