"""The behavioural contract every presence backend meets.

Each test runs against every shipped backend (the ``backend`` fixture is parametrized over
the in-memory backend and the Redis backend on a real Redis server). A third-party backend
passes this suite when it behaves like the shipped ones.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from django_presence.backends import BasePresenceBackend, Change, Transition
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend

ONLINE, OFFLINE, NONE = Transition.ONLINE, Transition.OFFLINE, Transition.NONE

# Short leases keep the suite fast; waits are on conditions, with generous deadlines.
TTL = 0.5
DEADLINE = 10.0


async def eventually(
    condition: Callable[[], Awaitable[Any]], timeout: float = DEADLINE, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Condition not met within {timeout} s: {what or condition}")
        await asyncio.sleep(0.02)


def like(backend: BasePresenceBackend, **options: Any) -> Any:
    """Another instance of ``backend``'s class on the same store, with ``options`` changed."""
    from django_presence.conf import presence_settings

    return type(backend)(**{**presence_settings.BACKEND_OPTIONS, **options})


async def sweep_until_offline(backend: BasePresenceBackend, user_id: str) -> list[Change]:
    """Sweep until ``user_id`` goes offline; return every change the sweeps produced."""
    changes: list[Change] = []

    async def swept_offline() -> bool:
        result = await backend.sweep()
        changes.extend(result.changes)
        return not await backend.is_online(user_id)

    await eventually(swept_offline, what=f"user {user_id} swept offline")
    return changes


async def test_first_add_comes_online_second_adds_nothing(backend: BasePresenceBackend) -> None:
    first = await backend.add_connection("1", "a", ttl=30)
    second = await backend.add_connection("1", "b", ttl=30)

    assert (first.user_id, first.transition, first.connection_count) == ("1", ONLINE, 1)
    assert first.seq > 0
    assert first.changed
    assert second == Change("1", NONE, 2, 0)
    assert not second.changed
    assert await backend.is_online("1")
    assert await backend.connection_count("1") == 2


async def test_seq_is_never_below_the_wall_clock_in_microseconds(
    backend: BasePresenceBackend,
) -> None:
    """So that a transition reconcile() announces with a seq from the clock comes after."""
    before = time.time_ns() // 1000
    change = await backend.add_connection("1", "a", ttl=30)
    # Redis floors seq at its own clock: allow for a server clock a little behind ours.
    assert change.seq >= before - 5_000_000
    assert (await backend.remove_connection("1", "a")).seq > change.seq


async def test_adding_the_same_connection_again_refreshes_it(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=30)
    again = await backend.add_connection("1", "a", ttl=30)

    assert again == Change("1", NONE, 1, 0)
    assert [c.connection_id for c in await backend.user_connections("1")] == ["a"]


async def test_remove_non_last_changes_nothing_remove_last_goes_offline(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=30)
    await backend.add_connection("1", "b", ttl=30)

    first = await backend.remove_connection("1", "a")
    assert first == Change("1", NONE, 1, 0)
    assert await backend.is_online("1")

    last = await backend.remove_connection("1", "b")
    assert (last.transition, last.connection_count) == (OFFLINE, 0)
    assert last.seq > 0
    assert not await backend.is_online("1")
    assert await backend.connection_count("1") == 0
    assert await backend.user_connections("1") == []


async def test_seq_increases_strictly_across_transitions_and_users(
    backend: BasePresenceBackend,
) -> None:
    seqs = []
    for round_ in range(3):
        for user in ("1", "2"):
            seqs.append((await backend.add_connection(user, f"c{round_}", ttl=30)).seq)
            assert (await backend.add_connection(user, f"d{round_}", ttl=30)).seq == 0
        for user in ("1", "2"):
            assert (await backend.remove_connection(user, f"d{round_}")).seq == 0
            seqs.append((await backend.remove_connection(user, f"c{round_}")).seq)

    assert all(s > 0 for s in seqs)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_seq_keeps_increasing_after_the_store_lost_everything(
    backend: BasePresenceBackend,
) -> None:
    """Watchers drop a status older than the newest they saw: seq must survive a restart."""
    before = await backend.add_connection("1", "a", ttl=30)
    await backend.clear()  # What a Redis restart without persistence looks like.

    after = await backend.add_connection("1", "a", ttl=30)

    assert after.transition is ONLINE
    assert after.seq > before.seq


async def test_removing_unknown_connections_changes_nothing(
    backend: BasePresenceBackend,
) -> None:
    assert await backend.remove_connection("1", "nope") == Change("1", NONE, 0, 0)

    await backend.add_connection("1", "a", ttl=30)
    assert await backend.remove_connection("1", "nope") == Change("1", NONE, 1, 0)
    assert await backend.remove_connection("1", "nope", grace=5) == Change("1", NONE, 1, 0)
    assert await backend.is_online("1")


async def test_double_remove_goes_offline_once(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=30)

    first = await backend.remove_connection("1", "a")
    second = await backend.remove_connection("1", "a")

    assert first.transition is OFFLINE
    assert second == Change("1", NONE, 0, 0)


async def test_double_remove_with_grace_keeps_one_closing_lease(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=30)

    assert await backend.remove_connection("1", "a", grace=30) == Change("1", NONE, 0, 0)
    assert await backend.remove_connection("1", "a", grace=30) == Change("1", NONE, 0, 0)
    assert await backend.remove_connection("1", "a") == Change("1", NONE, 0, 0)

    assert await backend.is_online("1")
    [info] = await backend.user_connections("1")
    assert info.closing


async def test_grace_keeps_the_user_online_without_open_connections(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=30)

    change = await backend.remove_connection("1", "a", grace=30)

    assert change == Change("1", NONE, 0, 0)
    assert await backend.is_online("1")
    assert await backend.connection_count("1") == 0
    assert await backend.online_user_ids(["1", "2"]) == {"1"}
    assert await backend.all_online_user_ids() == {"1"}
    [info] = await backend.user_connections("1")
    assert (info.connection_id, info.closing) == ("a", True)
    assert (await backend.sweep()).changes == ()


async def test_grace_applies_to_the_last_connection_only(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=30)
    await backend.add_connection("1", "b", ttl=30)

    assert await backend.remove_connection("1", "a", grace=30) == Change("1", NONE, 1, 0)

    assert [c.connection_id for c in await backend.user_connections("1")] == ["b"]


async def test_reconnect_within_grace_is_no_transition_and_drops_the_closing_lease(
    backend: BasePresenceBackend,
) -> None:
    online = await backend.add_connection("1", "a", ttl=30)
    await backend.remove_connection("1", "a", grace=TTL)

    change = await backend.add_connection("1", "b", ttl=30)

    assert change == Change("1", NONE, 1, 0)
    infos = await backend.user_connections("1")
    assert [(i.connection_id, i.closing) for i in infos] == [("b", False)]
    assert (await backend.presence_snapshot(["1"]))["1"] == (True, online.seq)
    # Long after the grace would have ended, nothing goes offline.
    await asyncio.sleep(TTL * 2)
    assert (await backend.sweep()).changes == ()
    assert await backend.is_online("1")


async def test_reopening_the_closing_connection_itself_is_no_transition(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=30)
    await backend.remove_connection("1", "a", grace=30)

    [closing] = await backend.user_connections("1")
    assert await backend.add_connection("1", "a", ttl=30) == Change("1", NONE, 1, 0)
    [info] = await backend.user_connections("1")
    assert not info.closing
    assert info.opened_at == closing.opened_at


async def test_grace_expiry_goes_offline_exactly_once_on_sweep(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=30)
    await backend.add_connection("2", "z", ttl=30)
    await backend.remove_connection("1", "a", grace=0.3)

    changes = await sweep_until_offline(backend, "1")

    assert [(c.user_id, c.transition) for c in changes] == [("1", OFFLINE)]
    assert changes[0].seq > 0
    assert (await backend.sweep()).changes == ()
    assert await backend.user_connections("1") == []
    assert await backend.is_online("2")


async def test_crashed_connection_is_swept_after_its_ttl(backend: BasePresenceBackend) -> None:
    """A connection whose process died (never heartbeated) goes offline once its lease ends."""
    online = await backend.add_connection("1", "crashed", ttl=0.3)
    await backend.add_connection("2", "alive", ttl=30)

    changes = await sweep_until_offline(backend, "1")

    [change] = changes
    assert (change.user_id, change.transition, change.connection_count) == ("1", OFFLINE, 0)
    assert change.seq > online.seq
    assert await backend.user_connections("1") == []
    assert await backend.all_online_user_ids() == {"2"}


async def test_sweep_counts_removed_leases_and_reports_one_change_per_user(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=0.2)
    await backend.add_connection("1", "b", ttl=0.2)
    await backend.add_connection("2", "c", ttl=0.2)
    await backend.add_connection("3", "d", ttl=0.2)
    await backend.add_connection("3", "e", ttl=30)
    await asyncio.sleep(0.3)

    result = await backend.sweep()

    assert result.swept
    assert result.removed == 4
    assert sorted(c.user_id for c in result.changes) == ["1", "2"]
    assert all(c.transition is OFFLINE for c in result.changes)
    assert await backend.connection_count("3") == 1


async def test_heartbeat_extends_leases(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=0.2)
    await backend.add_connection("2", "b", ttl=0.2)
    [before] = await backend.user_connections("1")
    await asyncio.sleep(0.3)  # Both leases are past their end, neither is swept yet.

    assert await backend.heartbeat([("1", "a")], ttl=30) == []
    result = await backend.sweep()

    assert [c.user_id for c in result.changes] == ["2"]
    assert await backend.is_online("1")
    [after] = await backend.user_connections("1")
    assert after.opened_at == before.opened_at
    assert after.expires_at > before.expires_at + 20


async def test_heartbeat_stores_missing_connections_again(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=30)
    await backend.add_connection("1", "b", ttl=30)
    await backend.add_connection("2", "c", ttl=30)
    await backend.clear()  # Redis restarted empty.
    assert not await backend.is_online("1")

    restored = await backend.heartbeat([("1", "a"), ("1", "b"), ("2", "c")], ttl=30)

    assert [cid for cid, _ in restored] == ["a", "b", "c"]
    changes = [change for _, change in restored]
    assert [(c.user_id, c.transition, c.connection_count) for c in changes] == [
        ("1", ONLINE, 1),
        ("1", NONE, 2),
        ("2", ONLINE, 1),
    ]
    assert changes[0].seq > 0
    assert changes[2].seq > changes[0].seq
    assert await backend.connection_count("1") == 2
    assert await backend.all_online_user_ids() == {"1", "2"}
    # The next heartbeat merely extends them.
    assert await backend.heartbeat([("1", "a"), ("1", "b"), ("2", "c")], ttl=30) == []


async def test_heartbeat_of_a_swept_connection_comes_online_again(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=0.2)
    await sweep_until_offline(backend, "1")

    [(cid, change)] = await backend.heartbeat([("1", "a")], ttl=30)

    assert (cid, change.transition, change.connection_count) == ("a", ONLINE, 1)


async def test_heartbeat_of_a_closing_connection_reopens_it(
    backend: BasePresenceBackend,
) -> None:
    """A heartbeat racing a close stores the connection again; the caller removes it."""
    await backend.add_connection("1", "a", ttl=30)
    await backend.remove_connection("1", "a", grace=30)

    [(cid, change)] = await backend.heartbeat([("1", "a")], ttl=30)

    assert (cid, change) == ("a", Change("1", NONE, 1, 0))
    [info] = await backend.user_connections("1")
    assert not info.closing
    assert await backend.connection_count("1") == 1


async def test_heartbeat_with_no_connections(backend: BasePresenceBackend) -> None:
    assert await backend.heartbeat([], ttl=30) == []


async def test_heartbeat_and_sweep(backend: BasePresenceBackend) -> None:
    await backend.add_connection("mine", "a", ttl=0.1)  # Expired, but still held open...
    await backend.add_connection("crashed", "b", ttl=0.1)
    await backend.add_connection("lost", "c", ttl=30)
    await backend.remove_user("lost")  # ...and one the store lost.
    await asyncio.sleep(0.2)

    restored, result = await backend.heartbeat_and_sweep(
        [("mine", "a"), ("lost", "c")], ttl=30, server="web-2:7", lock_ttl=30
    )

    assert [(cid, c.user_id, c.transition) for cid, c in restored] == [("c", "lost", ONLINE)]
    assert result.swept
    assert result.removed == 1
    assert [(c.user_id, c.transition) for c in result.changes] == [("crashed", OFFLINE)]
    assert result.changes[0].seq > restored[0][1].seq
    assert await backend.all_online_user_ids() == {"mine", "lost"}
    [info] = await backend.user_connections("lost")
    assert info.server == "web-2:7"
    # Another process within the lock: its own leases are extended, nobody is swept.
    await backend.add_connection("crashed", "d", ttl=0.1)
    await asyncio.sleep(0.2)
    restored, result = await backend.heartbeat_and_sweep([("mine", "a")], ttl=30, lock_ttl=30)
    assert (restored, result.swept) == ([], False)
    assert await backend.is_online("crashed")


async def test_heartbeat_and_sweep_of_many_connections(backend: BasePresenceBackend) -> None:
    pairs = [(str(i % 1000), f"c{i}") for i in range(12_000)]
    await backend.heartbeat(pairs[:6000], ttl=0.2)
    await asyncio.sleep(0.3)

    restored, result = await backend.heartbeat_and_sweep(pairs, ttl=30, limit=100_000)

    assert [cid for cid, _ in restored] == [cid for _, cid in pairs[6000:]]
    assert result.removed == 0
    assert await backend.connection_count("7") == 12
    assert len(await backend.all_online_user_ids()) == 1000


async def test_sweep_lock(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=0.1)
    await asyncio.sleep(0.2)

    first = await backend.sweep(lock_ttl=30)
    await backend.add_connection("2", "b", ttl=0.1)
    await asyncio.sleep(0.2)
    second = await backend.sweep(lock_ttl=30)

    assert first.swept
    assert [c.user_id for c in first.changes] == ["1"]
    assert second.swept is False
    assert (second.removed, second.changes) == (0, ())
    assert await backend.is_online("2")
    # A sweep without the lock (management command) still works.
    assert [c.user_id for c in (await backend.sweep()).changes] == ["2"]


async def test_sweep_lock_expires(backend: BasePresenceBackend) -> None:
    assert (await backend.sweep(lock_ttl=0.2)).swept

    async def swept() -> bool:
        return (await backend.sweep(lock_ttl=0.2)).swept

    await eventually(swept, what="sweep lock released")


async def test_sweep_limit(backend: BasePresenceBackend) -> None:
    for i in range(7):
        await backend.add_connection(str(i), "c", ttl=0.1)
    await asyncio.sleep(0.2)

    first = await backend.sweep(limit=3)
    second = await backend.sweep(limit=3)
    third = await backend.sweep(limit=3)

    assert (first.removed, second.removed, third.removed) == (3, 3, 1)
    users = [c.user_id for r in (first, second, third) for c in r.changes]
    assert sorted(users) == [str(i) for i in range(7)]
    assert await backend.all_online_user_ids() == set()


async def test_remove_user_removes_everything_without_grace(
    backend: BasePresenceBackend,
) -> None:
    await backend.add_connection("1", "a", ttl=30)
    await backend.add_connection("1", "b", ttl=30)
    await backend.add_connection("2", "c", ttl=30)

    removed, change = await backend.remove_user("1")

    assert removed == 2
    assert (change.transition, change.connection_count) == (OFFLINE, 0)
    assert change.seq > 0
    assert not await backend.is_online("1")
    assert await backend.user_connections("1") == []
    assert (await backend.sweep()).changes == ()
    assert await backend.remove_user("1") == (0, Change("1", NONE, 0, 0))
    assert await backend.is_online("2")


async def test_remove_user_ends_a_grace_period(backend: BasePresenceBackend) -> None:
    await backend.add_connection("1", "a", ttl=30)
    await backend.remove_connection("1", "a", grace=30)

    removed, change = await backend.remove_user("1")

    assert (removed, change.transition) == (1, OFFLINE)
    assert not await backend.is_online("1")
    assert (await backend.add_connection("1", "b", ttl=30)).transition is ONLINE


async def test_online_user_ids(backend: BasePresenceBackend) -> None:
    assert await backend.online_user_ids([]) == set()
    assert await backend.online_user_ids(["1"]) == set()
    await backend.add_connection("1", "a", ttl=30)
    assert await backend.online_user_ids(["1"]) == {"1"}
    assert await backend.online_user_ids(iter(["1", "2", "1"])) == {"1"}


async def test_online_user_ids_of_ten_thousand_users(backend: BasePresenceBackend) -> None:
    online = {str(i) for i in range(0, 10_000, 7)}
    await backend.heartbeat([(uid, "c") for uid in sorted(online)], ttl=30)
    asked = [str(i) for i in range(10_000)]

    assert await backend.online_user_ids(asked) == online
    assert await backend.all_online_user_ids() == online
    snapshot = await backend.presence_snapshot(asked)
    assert len(snapshot) == 10_000
    assert {uid for uid, (on, _) in snapshot.items() if on} == online


async def test_presence_snapshot(backend: BasePresenceBackend) -> None:
    assert await backend.presence_snapshot([]) == {}
    assert await backend.presence_snapshot(["1"]) == {"1": (False, 0)}

    online = await backend.add_connection("1", "a", ttl=30)
    await backend.add_connection("2", "b", ttl=30)
    offline = await backend.remove_connection("2", "b")

    assert await backend.presence_snapshot(["1", "2", "3"]) == {
        "1": (True, online.seq),
        "2": (False, offline.seq),
        "3": (False, 0),
    }


async def test_user_connections(backend: BasePresenceBackend) -> None:
    assert await backend.user_connections("1") == []
    await backend.add_connection("1", "a", ttl=30, server="web-1:42")
    await backend.add_connection("1", "b", ttl=60)
    first = {i.connection_id: i for i in await backend.user_connections("1")}

    assert sorted(first) == ["a", "b"]
    a, b = first["a"], first["b"]
    assert (a.user_id, a.server, a.closing) == ("1", "web-1:42", False)
    assert a.expires_at == pytest.approx(a.opened_at + 30, abs=1)
    assert b.expires_at == pytest.approx(b.opened_at + 60, abs=1)

    # Refreshing keeps the opening time and the server.
    await asyncio.sleep(0.05)
    await backend.add_connection("1", "a", ttl=30)
    [again] = [i for i in await backend.user_connections("1") if i.connection_id == "a"]
    assert (again.opened_at, again.server) == (a.opened_at, "web-1:42")
    assert again.expires_at > a.expires_at


ODD_IDS = [
    "user:with:colons",
    "pipe|in|it",
    "5:tricky",  # Looks like the length prefix of the Redis member encoding.
    "ünïcødé-ユーザー",
    str(uuid.UUID("12345678-1234-5678-1234-567812345678")),
    "x" * 300,
]


@pytest.mark.parametrize("user_id", ODD_IDS)
async def test_odd_ids_round_trip(backend: BasePresenceBackend, user_id: str) -> None:
    connection_ids = ["c:1|x", "ü:2", "3"]
    # A second user whose id is a prefix of the first must stay apart from it.
    other = user_id[:-1] or "other"
    await backend.add_connection(other, "c:1|x", ttl=30)
    for cid in connection_ids:
        await backend.add_connection(user_id, cid, ttl=0.3)

    infos = await backend.user_connections(user_id)
    assert sorted(i.connection_id for i in infos) == sorted(connection_ids)
    assert await backend.connection_count(user_id) == 3
    assert await backend.online_user_ids([user_id, "nobody"]) == {user_id}
    assert user_id in await backend.all_online_user_ids()
    assert await backend.heartbeat([(user_id, "3")], ttl=30) == []

    # Sweeping splits the stored member back into the right user and connection.
    async def only_one_left() -> bool:
        await backend.sweep()
        return await backend.connection_count(user_id) == 1

    await eventually(only_one_left, what="two leases of the odd user swept")
    assert [i.connection_id for i in await backend.user_connections(user_id)] == ["3"]
    change = await backend.remove_connection(user_id, "3", grace=0.2)
    assert change == Change(user_id, NONE, 0, 0)
    assert [c.user_id for c in await sweep_until_offline(backend, user_id)] == [user_id]
    assert await backend.all_online_user_ids() == {other}


async def test_concurrent_adds_of_one_user_come_online_once(
    backend: BasePresenceBackend,
) -> None:
    changes = await asyncio.gather(
        *(backend.add_connection("1", f"c{i}", ttl=30) for i in range(50))
    )

    assert [c.transition for c in changes].count(ONLINE) == 1
    assert sorted(c.connection_count for c in changes) == list(range(1, 51))
    assert await backend.connection_count("1") == 50


async def test_concurrent_removes_of_one_user_go_offline_once(
    backend: BasePresenceBackend,
) -> None:
    for i in range(50):
        await backend.add_connection("1", f"c{i}", ttl=30)

    changes = await asyncio.gather(*(backend.remove_connection("1", f"c{i}") for i in range(50)))

    assert [c.transition for c in changes].count(OFFLINE) == 1
    assert sorted(c.connection_count for c in changes) == list(range(50))
    assert not await backend.is_online("1")


async def test_concurrent_mixed_operations_alternate(backend: BasePresenceBackend) -> None:
    """Transitions of one user, ordered by seq, alternate ONLINE / OFFLINE."""

    async def churn(worker: int) -> list[Change]:
        changes = []
        for i in range(20):
            cid = f"w{worker}-{i}"
            changes.append(await backend.add_connection("1", cid, ttl=30))
            await asyncio.sleep(0)
            changes.append(await backend.remove_connection("1", cid, grace=0))
        return changes

    results = await asyncio.gather(*(churn(w) for w in range(5)))
    transitions = sorted(
        (c for changes in results for c in changes if c.changed), key=lambda c: c.seq
    )

    assert transitions, "churn made no transition at all"
    assert [c.transition for c in transitions] == [ONLINE, OFFLINE] * (len(transitions) // 2)
    assert not await backend.is_online("1")


def test_both_backends_decide_the_same(redis_url: str) -> None:
    """Random operation sequences give the same transitions on memory and on Redis."""
    users = st.sampled_from(["1", "2", "u:3"])
    connections = st.sampled_from(["a", "b", "c|1"])

    class SameDecisions(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.memory = MemoryBackend()
            self.redis = RedisBackend(url=redis_url, key_prefix=f"diff-{uuid.uuid4().hex[:8]}")

        def both(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            async def run(backend: BasePresenceBackend) -> Any:
                return await getattr(backend, name)(*args, **kwargs)

            return (
                self.loop.run_until_complete(run(self.memory)),
                self.loop.run_until_complete(run(self.redis)),
            )

        @staticmethod
        def decided(change: Change) -> tuple[str, Transition, int]:
            return (change.user_id, change.transition, change.connection_count)

        @rule(user=users, cid=connections)
        def add(self, user: str, cid: str) -> None:
            memory, redis_ = self.both("add_connection", user, cid, ttl=30)
            assert self.decided(memory) == self.decided(redis_)

        @rule(user=users, cid=connections, grace=st.sampled_from([0, 30]))
        def remove(self, user: str, cid: str, grace: float) -> None:
            memory, redis_ = self.both("remove_connection", user, cid, grace=grace)
            assert self.decided(memory) == self.decided(redis_)

        @rule(pairs=st.lists(st.tuples(users, connections), max_size=4))
        def heartbeat(self, pairs: list[tuple[str, str]]) -> None:
            memory, redis_ = self.both("heartbeat", pairs, ttl=30)
            assert [(cid, self.decided(c)) for cid, c in memory] == [
                (cid, self.decided(c)) for cid, c in redis_
            ]

        @rule(user=users)
        def remove_user(self, user: str) -> None:
            (m_count, memory), (r_count, redis_) = self.both("remove_user", user)
            assert (m_count, self.decided(memory)) == (r_count, self.decided(redis_))

        @invariant()
        def same_state(self) -> None:
            memory, redis_ = self.both("all_online_user_ids")
            assert memory == redis_
            for user in ("1", "2", "u:3"):
                counts = self.both("connection_count", user)
                assert counts[0] == counts[1]
                m_infos, r_infos = self.both("user_connections", user)
                assert sorted((i.connection_id, i.closing) for i in m_infos) == sorted(
                    (i.connection_id, i.closing) for i in r_infos
                )

        def teardown(self) -> None:
            self.loop.run_until_complete(self.redis.clear())
            self.loop.run_until_complete(self.redis.aclose())
            self.loop.close()

    run_state_machine_as_test(
        SameDecisions,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


async def test_blocking_reads_agree_with_the_coroutines(backend: BasePresenceBackend) -> None:
    """The ``*_sync`` reads that views and the admin call see what the coroutines see."""
    await backend.add_connection("1", "a", ttl=30)
    await backend.add_connection("1", "b", ttl=30)
    await backend.add_connection("2", "c", ttl=30)
    await backend.remove_connection("2", "c", grace=30)  # online, in its grace period
    ids = [str(i) for i in range(1, 12_001)]  # more than one Redis command's worth

    def blocking() -> tuple[Any, ...]:  # sync code runs off the event loop, as here
        return (
            [backend.is_online_sync(uid) for uid in ("1", "2", "3")],
            [backend.connection_count_sync(uid) for uid in ("1", "2", "3")],
            backend.online_user_ids_sync(ids),
            backend.online_user_ids_sync([]),
            backend.all_online_user_ids_sync(),
        )

    coroutines = (
        [await backend.is_online(uid) for uid in ("1", "2", "3")],
        [await backend.connection_count(uid) for uid in ("1", "2", "3")],
        await backend.online_user_ids(ids),
        await backend.online_user_ids([]),
        await backend.all_online_user_ids(),
    )
    expected = ([True, True, False], [2, 0, 0], {"1", "2"}, set(), {"1", "2"})
    assert await asyncio.to_thread(blocking) == coroutines == expected

    await backend.remove_user("1")
    assert await asyncio.to_thread(backend.is_online_sync, "1") is False
    assert await asyncio.to_thread(backend.all_online_user_ids_sync) == {"2"}


async def test_the_last_seq_of_an_offline_user_is_forgotten_after_the_retention(
    backend: BasePresenceBackend,
) -> None:
    """The store does not grow with every user who was ever online."""
    # Long enough that the steps before the first sweep fit in it on a loaded machine
    # (0.3 s did not: they once took 0.43 s in CI).
    short = like(backend, transition_retention=1.5)
    await short.add_connection("gone", "a", ttl=30)
    offline = await short.remove_connection("gone", "a")
    back = await short.add_connection("back", "b", ttl=30)  # offline, then online again
    await short.remove_connection("back", "b")
    back = await short.add_connection("back", "c", ttl=30)
    stays = await short.add_connection("stays", "d", ttl=30)
    await short.sweep()  # within the retention: nothing forgotten
    assert await short.presence_snapshot(["gone", "back", "stays"]) == {
        "gone": (False, offline.seq),
        "back": (True, back.seq),
        "stays": (True, stays.seq),
    }

    await asyncio.sleep(1.6)
    await short.sweep()

    assert await short.presence_snapshot(["gone", "back", "stays"]) == {
        "gone": (False, 0),
        "back": (True, back.seq),
        "stays": (True, stays.seq),
    }
    again = await short.add_connection("gone", "e", ttl=30)
    assert again.transition is ONLINE
    assert again.seq > stays.seq  # seq still only grows
    await short.aclose()


@pytest.mark.parametrize("bad", [-1, "1h", None, True])
def test_transition_retention_is_validated(backend: BasePresenceBackend, bad: Any) -> None:
    with pytest.raises(ValueError, match="transition_retention"):
        like(backend, transition_retention=bad)
