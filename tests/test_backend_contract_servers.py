"""The backend contract, continued: a lease per server process (issue 17).

A connection added with a ``server`` is *filed under* that server and lives as long as the
server's lease, which one :meth:`~BasePresenceBackend.renew_server` call extends whatever
the server holds. Like ``test_backend_contract.py``, every test runs against every
shipped backend (memory, and Redis on a real server), and
``tests/faults/test_contract_many_servers.py`` runs them again on Redis Sentinel and
Redis Cluster.

Leases that must lapse are short (``TTL``); while one must hold, it is renewed every
``BEAT`` (well within ``TTL``). Expiries are waited for with polling sweeps and generous
deadlines, never with fixed sleeps that a slow machine could outrun.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from django_presence.backends import BasePresenceBackend, Change, SweepResult, Transition

from .test_backend_contract import eventually

ONLINE, OFFLINE, NONE = Transition.ONLINE, Transition.OFFLINE, Transition.NONE

TTL = 0.3  # A lease that the test lets lapse.
BEAT = 0.05  # How often a lease that must hold is renewed.
LONG = 30.0  # A lease that must not lapse during a test.
S = "web-1:42#a1b2c3"  # The server process under test...
OTHER = "web-2:7#d4e5f6"  # ...and another one.


def transitions(changes: Sequence[Change]) -> list[tuple[str, Transition]]:
    """The (user, transition) of the changes that are transitions, in order."""
    return [(c.user_id, c.transition) for c in changes if c.changed]


async def connection_ids(backend: BasePresenceBackend, user_id: str) -> list[str]:
    return sorted(info.connection_id for info in await backend.user_connections(user_id))


async def sweep_until(
    backend: BasePresenceBackend, condition: Callable[[], Awaitable[bool]], what: str
) -> list[Change]:
    """Sweep until ``condition()``; return every change the sweeps produced."""
    changes: list[Change] = []

    async def done() -> bool:
        changes.extend((await backend.sweep()).changes)
        return await condition()

    await eventually(done, what=what)
    return changes


async def offline(backend: BasePresenceBackend, *user_ids: str) -> list[Change]:
    """Sweep until every one of ``user_ids`` is offline; return the sweeps' changes."""

    async def all_offline() -> bool:
        return not await backend.online_user_ids(user_ids)

    return await sweep_until(backend, all_offline, f"users {user_ids} swept offline")


async def keep_renewing(
    backend: BasePresenceBackend, server: str, seconds: float, *, ttl: float = TTL
) -> list[Change]:
    """Renew ``server``'s lease (held, every call) and sweep, for ``seconds``."""
    changes: list[Change] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await backend.renew_server(server, ttl=ttl) is True
        changes.extend((await backend.sweep()).changes)
        await asyncio.sleep(BEAT)
    return changes


async def take_lease(
    backend: BasePresenceBackend,
    server: str,
    pairs: Sequence[tuple[str, str]] = (),
    *,
    ttl: float = TTL,
) -> None:
    """What a process does on its first beat: renew (not held), then file what it holds."""
    assert await backend.renew_server(server, ttl=ttl) is False
    assert await backend.heartbeat(pairs, ttl=ttl, server=server) == []


async def test_filed_connections_live_as_long_as_their_servers_lease(
    backend: BasePresenceBackend,
) -> None:
    filed = [("1", "a"), ("1", "b"), ("2", "c"), ("3", "e")]
    for user_id, cid in filed:
        await backend.add_connection(user_id, cid, ttl=TTL, server=S)
    await backend.add_connection("2", "d", ttl=LONG)  # A lease of its own...
    await backend.add_connection("3", "f", ttl=LONG, server=OTHER)  # ...and another server's.
    await take_lease(backend, S, filed)

    # One renewal per beat keeps every connection of the server, for several leases.
    assert await keep_renewing(backend, S, 2 * TTL) == []
    assert await backend.all_online_user_ids() == {"1", "2", "3"}
    assert await connection_ids(backend, "1") == ["a", "b"]

    # The server stops renewing (it crashed): all of its connections go.
    async def gone() -> bool:
        left = [await connection_ids(backend, user_id) for user_id in ("1", "2", "3")]
        return left == [[], ["d"], ["f"]]

    changes = await sweep_until(backend, gone, "the crashed server's connections removed")
    # One OFFLINE for the user it alone held; none for those connected elsewhere.
    assert transitions(changes) == [("1", OFFLINE)]
    assert await backend.all_online_user_ids() == {"2", "3"}
    assert (await backend.sweep()).removed == 0


async def test_the_sweep_counts_what_a_dead_server_held(backend: BasePresenceBackend) -> None:
    for user_id, cid in [("1", "a"), ("1", "b"), ("2", "c")]:
        await backend.add_connection(user_id, cid, ttl=0.1, server=S)
    await asyncio.sleep(0.2)

    result = await backend.sweep()

    assert (result.removed, result.more) == (3, False)
    assert sorted(transitions(result.changes)) == [("1", OFFLINE), ("2", OFFLINE)]
    assert (await backend.sweep()).removed == 0


async def test_renew_server_says_whether_the_lease_was_held_and_confirmed(
    backend: BasePresenceBackend,
) -> None:
    assert await backend.renew_server(S, ttl=TTL) is False  # The first call.
    assert await backend.renew_server(S, ttl=TTL) is True
    online = await backend.add_connection("1", "a", ttl=TTL, server=S)
    assert online.transition is ONLINE
    assert await backend.renew_server(S, ttl=TTL) is True  # Adding keeps it confirmed.
    assert await backend.renew_server(OTHER, ttl=TTL) is False  # Each server its own.

    # The lease lapses and is swept: lost, and its connections with it.
    assert transitions(await offline(backend, "1")) == [("1", OFFLINE)]
    assert await backend.renew_server(S, ttl=TTL) is False
    # Filing again what the process holds stores it again, as restored.
    restored = await backend.heartbeat([("1", "a")], ttl=TTL, server=S)
    assert [(cid, c.user_id, c.transition) for cid, c in restored] == [("a", "1", ONLINE)]
    assert await backend.renew_server(S, ttl=TTL) is True
    [info] = await backend.user_connections("1")
    assert info.server == S

    # Lost again; then add_connection creates the lease anew, unconfirmed.
    assert transitions(await offline(backend, "1")) == [("1", OFFLINE)]
    assert (await backend.add_connection("1", "a", ttl=TTL, server=S)).transition is ONLINE
    assert await backend.renew_server(S, ttl=TTL) is False
    assert await backend.heartbeat([("1", "a")], ttl=TTL, server=S) == []
    # Filed again before its retirement came: it stays, with no transition.
    assert await keep_renewing(backend, S, 2 * TTL) == []
    assert await connection_ids(backend, "1") == ["a"]

    # The store lost everything.
    await backend.clear()
    assert await backend.renew_server(S, ttl=TTL) is False
    restored = await backend.heartbeat([("1", "a")], ttl=TTL, server=S)
    assert [(cid, c.transition) for cid, c in restored] == [("a", ONLINE)]


async def test_an_expired_lease_not_yet_swept_is_still_held(
    backend: BasePresenceBackend,
) -> None:
    await take_lease(backend, S, ttl=0.1)
    await backend.add_connection("1", "a", ttl=0.1, server=S)
    await asyncio.sleep(0.25)  # Expired, but nobody swept: nothing was lost.

    assert await backend.renew_server(S, ttl=LONG) is True
    assert (await backend.sweep()).removed == 0
    assert await connection_ids(backend, "1") == ["a"]


async def test_a_connection_added_unconfirmed_is_dropped_unless_filed_again(
    backend: BasePresenceBackend,
) -> None:
    """A process whose first renewal returns False holds only what it files again."""
    await backend.add_connection("1", "a", ttl=TTL, server=S)
    await backend.add_connection("1", "b", ttl=TTL, server=S)
    await backend.add_connection("2", "c", ttl=TTL, server=S)

    assert await backend.renew_server(S, ttl=TTL) is False
    assert await backend.heartbeat([("1", "a")], ttl=TTL, server=S) == []

    async def dropped() -> bool:
        assert await backend.renew_server(S, ttl=TTL) is True
        return not await backend.is_online("2")

    changes = await sweep_until(backend, dropped, "the connections not filed again removed")
    assert transitions(changes) == [("2", OFFLINE)]
    assert await connection_ids(backend, "1") == ["a"]


async def test_rotate_drops_what_is_not_filed_again_within_ttl(
    backend: BasePresenceBackend,
) -> None:
    held = [("1", "a"), ("2", "c")]
    failed = [("1", "b"), ("3", "d")]  # Connections whose removal failed.
    await take_lease(backend, S)
    for user_id, cid in held + failed:
        await backend.add_connection(user_id, cid, ttl=TTL, server=S)
    assert await backend.renew_server(S, ttl=TTL) is True

    assert await backend.renew_server(S, ttl=TTL, rotate=True) is False
    assert await backend.heartbeat(held, ttl=TTL, server=S) == []
    # Not before ttl...
    before = await backend.sweep()
    assert (before.removed, transitions(before.changes)) == (0, [])
    assert await connection_ids(backend, "1") == ["a", "b"]
    # ...but after it, while the server's lease holds (and stays confirmed).
    changes: list[Change] = []

    async def rotated() -> bool:
        assert await backend.renew_server(S, ttl=TTL) is True
        changes.extend((await backend.sweep()).changes)
        return not await backend.is_online("3")

    await eventually(rotated, what="the connections not filed again removed")
    assert transitions(changes) == [("3", OFFLINE)]
    assert await connection_ids(backend, "1") == ["a"]
    assert await connection_ids(backend, "2") == ["c"]
    assert await keep_renewing(backend, S, 2 * TTL) == []  # The rest stays.
    assert await backend.all_online_user_ids() == {"1", "2"}


async def test_rotate_with_everything_filed_again_changes_nothing(
    backend: BasePresenceBackend,
) -> None:
    pairs = [("1", "a"), ("1", "b"), ("2", "c")]
    await take_lease(backend, S)
    for user_id, cid in pairs:
        await backend.add_connection(user_id, cid, ttl=TTL, server=S)

    for _ in range(3):
        assert await backend.renew_server(S, ttl=TTL, rotate=True) is False
        assert await backend.heartbeat(pairs, ttl=TTL, server=S) == []
        await asyncio.sleep(BEAT)
    assert await keep_renewing(backend, S, 2 * TTL) == []
    assert await connection_ids(backend, "1") == ["a", "b"]
    assert await connection_ids(backend, "2") == ["c"]


async def test_a_dead_server_is_swept_a_limit_at_a_time(backend: BasePresenceBackend) -> None:
    limit = 5
    pairs = [(str(i % 6), f"c{i}") for i in range(3 * limit)]
    for user_id, cid in pairs:
        await backend.add_connection(user_id, cid, ttl=0.1, server=S)
    await backend.add_connection("elsewhere", "x", ttl=LONG)
    await asyncio.sleep(0.2)

    results: list[SweepResult] = []
    while len(results) < 10:
        result = await backend.sweep(limit=limit)
        results.append(result)
        assert result.removed <= limit
        if not result.more:
            break

    # Bounded steps, each saying whether there is more: nothing is left for later.
    assert len(results) >= 3
    assert all(r.more for r in results[:-1])
    assert sum(r.removed for r in results) == 3 * limit
    offline_users = [c.user_id for r in results for c in r.changes if c.changed]
    assert sorted(offline_users) == [str(i) for i in range(6)]  # Each exactly once.
    assert all(c.transition is OFFLINE for r in results for c in r.changes if c.changed)
    assert await backend.all_online_user_ids() == {"elsewhere"}
    assert (await backend.sweep(limit=limit)).removed == 0


async def test_closing_a_filed_connection_gives_it_a_lease_of_its_own(
    backend: BasePresenceBackend,
) -> None:
    await take_lease(backend, S, ttl=0.1)
    await backend.add_connection("1", "a", ttl=0.1, server=S)
    start = await backend.now()
    assert await backend.remove_connection("1", "a", grace=1.0) == Change("1", NONE, 0)

    [info] = await backend.user_connections("1")
    assert info.closing
    assert info.expires_at == pytest.approx(start + 1.0, abs=0.2)
    # The server's lease lapses and is swept: the closing lease is not the server's.
    await asyncio.sleep(0.2)
    result = await backend.sweep()
    assert (result.removed, transitions(result.changes)) == (0, [])
    assert await backend.is_online("1")

    # Its grace decides.
    changes = await offline(backend, "1")
    assert transitions(changes) == [("1", OFFLINE)]
    assert await backend.now() >= start + 0.9


async def test_a_closing_lease_ends_with_its_grace_while_the_server_lives(
    backend: BasePresenceBackend,
) -> None:
    await take_lease(backend, S, ttl=LONG)
    await backend.add_connection("1", "a", ttl=LONG, server=S)
    await backend.add_connection("2", "b", ttl=LONG, server=S)
    await backend.remove_connection("1", "a", grace=TTL)

    changes = await offline(backend, "1")
    assert transitions(changes) == [("1", OFFLINE)]
    assert await backend.renew_server(S, ttl=LONG) is True
    assert await backend.all_online_user_ids() == {"2"}

    # Reconnecting within the grace period files it under its server again.
    await backend.remove_connection("2", "b", grace=LONG)
    again = await backend.add_connection("2", "b", ttl=TTL)
    assert (again.transition, again.connection_count) == (NONE, 1)
    [info] = await backend.user_connections("2")
    assert (info.server, info.closing) == (S, False)


async def test_removed_filed_connections_are_not_swept_again(
    backend: BasePresenceBackend,
) -> None:
    await take_lease(backend, S)
    for user_id, cid in [("1", "a"), ("1", "b"), ("2", "c"), ("3", "d")]:
        await backend.add_connection(user_id, cid, ttl=TTL, server=S)

    count, change = await backend.remove_user("1")
    assert (count, change.transition) == (2, OFFLINE)
    assert (await backend.remove_connection("3", "d")).transition is OFFLINE
    # The same ids come back with leases of their own, which the server's end must spare.
    assert (await backend.add_connection("1", "a", ttl=LONG)).transition is ONLINE
    assert (await backend.add_connection("3", "d", ttl=LONG)).transition is ONLINE

    changes = await offline(backend, "2")
    assert transitions(changes) == [("2", OFFLINE)]
    assert await backend.all_online_user_ids() == {"1", "3"}
    assert await connection_ids(backend, "1") == ["a"]
    [info] = await backend.user_connections("3")
    assert info.server == ""


async def test_user_connections_of_filed_connections(backend: BasePresenceBackend) -> None:
    await take_lease(backend, S, ttl=LONG)
    now = await backend.now()
    await backend.add_connection("1", "a", ttl=TTL, server=S)  # Never shortens the lease.
    await backend.add_connection("1", "b", ttl=TTL, server=S)

    infos = await backend.user_connections("1")
    assert [(i.server, i.closing) for i in infos] == [(S, False), (S, False)]
    assert all(i.expires_at == pytest.approx(now + LONG, abs=1) for i in infos)

    # The server's lease, whatever the connection's own ttl said.
    assert await backend.renew_server(S, ttl=10) is True
    now = await backend.now()
    assert all(
        i.expires_at == pytest.approx(now + 10, abs=1) for i in await backend.user_connections("1")
    )

    # Retired and not filed again: when it may be removed.
    assert await backend.renew_server(S, ttl=5, rotate=True) is False
    assert await backend.heartbeat([("1", "b")], ttl=20, server=S) == []
    now = await backend.now()
    found = {i.connection_id: i for i in await backend.user_connections("1")}
    assert found["a"].expires_at == pytest.approx(now + 5, abs=1)
    assert found["b"].expires_at == pytest.approx(now + 20, abs=1)


async def test_heartbeat_renews_the_server_of_filed_pairs(backend: BasePresenceBackend) -> None:
    await take_lease(backend, S)
    await backend.add_connection("1", "a", ttl=TTL, server=S)
    await backend.add_connection("2", "b", ttl=TTL, server=S)
    await backend.add_connection("1", "a", ttl=TTL)  # Added again: it keeps its server.

    # A heartbeat naming one pair, with no server or another one, renews the pair's server:
    # every connection filed under it lives on.
    deadline = time.monotonic() + 2 * TTL
    while time.monotonic() < deadline:
        assert await backend.heartbeat([("1", "a")], ttl=TTL) == []
        assert await backend.heartbeat([("1", "a")], ttl=TTL, server=OTHER) == []
        assert transitions((await backend.sweep()).changes) == []
        await asyncio.sleep(BEAT)
    assert await backend.all_online_user_ids() == {"1", "2"}
    infos = await backend.user_connections("1") + await backend.user_connections("2")
    assert {i.server for i in infos} == {S}

    changes = await offline(backend, "1", "2")
    assert sorted(transitions(changes)) == [("1", OFFLINE), ("2", OFFLINE)]


async def test_renew_server_and_sweep_does_both(backend: BasePresenceBackend) -> None:
    await backend.add_connection("crashed", "x", ttl=0.1)
    await asyncio.sleep(0.2)

    held, result = await backend.renew_server_and_sweep(S, ttl=TTL, lock_ttl=LONG)
    assert held is False
    assert (result.swept, result.removed, result.more) == (True, 1, False)
    assert transitions(result.changes) == [("crashed", OFFLINE)]

    await backend.add_connection("1", "a", ttl=TTL, server=S)
    # Within the sweep lock: the lease is renewed all the same.
    held, result = await backend.renew_server_and_sweep(S, ttl=TTL, lock_ttl=LONG)
    assert (held, result.swept) == (True, False)
    held, result = await backend.renew_server_and_sweep(S, ttl=TTL, rotate=True)
    assert (held, result.swept, result.removed) == (False, True, 0)
    assert await backend.heartbeat([("1", "a")], ttl=TTL, server=S) == []

    async def renewed() -> bool:
        held, result = await backend.renew_server_and_sweep(S, ttl=TTL, limit=10)
        assert held
        assert transitions(result.changes) == []
        return await backend.now() > start + 2 * TTL

    start = await backend.now()
    await eventually(renewed, what="two leases renewed")
    assert await connection_ids(backend, "1") == ["a"]


async def test_connections_without_a_server_keep_their_own_lease(
    backend: BasePresenceBackend,
) -> None:
    await take_lease(backend, S)
    await backend.add_connection("1", "a", ttl=0.1)

    # Renewing a server renews nothing else.
    changes = await offline(backend, "1")
    assert transitions(changes) == [("1", OFFLINE)]
    assert await backend.renew_server(S, ttl=TTL) is True
