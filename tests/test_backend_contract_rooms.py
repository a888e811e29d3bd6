"""The backend contract, continued: rooms (who is in each client group) and the clock.

Like ``test_backend_contract.py``, every test runs against every shipped backend (memory,
and Redis on a real server), and ``tests/faults/test_contract_many_servers.py`` runs them
again on Redis Sentinel and Redis Cluster.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from django_presence.backends import BasePresenceBackend, MemberChange

from .test_backend_contract import TTL, eventually

G = "room-1"


async def sweep_until(
    backend: BasePresenceBackend, groups: list[str], wanted: int
) -> list[MemberChange]:
    """Sweep ``groups`` until ``wanted`` leaves were reported; return all of them."""
    changes: list[MemberChange] = []

    async def enough() -> bool:
        changes.extend(await backend.room_sweep(groups))
        return len(changes) >= wanted

    await eventually(enough, what=f"{wanted} room leaves swept")
    return changes


async def room_keys(backend: Any, presence: dict[str, Any], group: str) -> list[Any]:
    """The Redis keys left under ``group`` (read through the backend's public client)."""
    pattern = "{" + presence["KEY_PREFIX"] + "}:room:" + group + ":*"
    return [key async for key in backend.client().scan_iter(match=pattern)]


async def test_join_and_leave_report_user_level_changes(backend: BasePresenceBackend) -> None:
    first = await backend.room_join(G, "1", "a", ttl=30)
    second = await backend.room_join(G, "2", "b", ttl=30)
    left = await backend.room_leave(G, "2", "b")

    assert first == MemberChange(G, "1", True, True, 0, 1, first.version)
    assert second == MemberChange(G, "2", True, True, 1, 2, second.version)
    assert left == MemberChange(G, "2", False, True, 2, 1, left.version)
    assert 0 < first.version < second.version < left.version
    assert await backend.room_members(G) == (["1"], left.version)


async def test_leaving_a_group_one_is_not_in_changes_nothing(
    backend: BasePresenceBackend,
) -> None:
    assert await backend.room_leave(G, "1", "a") == MemberChange(G, "1", False, False, 0, 0, 0)
    joined = await backend.room_join(G, "1", "a", ttl=30)

    unchanged = MemberChange(G, "2", False, False, 1, 1, joined.version)
    assert await backend.room_leave(G, "2", "a") == unchanged  # another user's member id
    assert await backend.room_leave(G, "2", "zz") == unchanged
    assert await backend.room_leave(G, "1", "a") == MemberChange(
        G, "1", False, True, 1, 0, joined.version + 1
    )
    assert await backend.room_leave(G, "1", "a") == MemberChange(G, "1", False, False, 0, 0, 0)


async def test_a_second_tab_joins_and_leaves_silently(backend: BasePresenceBackend) -> None:
    first = await backend.room_join(G, "1", "tab-1", ttl=30)
    v = first.version

    assert await backend.room_join(G, "1", "tab-2", ttl=30) == MemberChange(
        G, "1", True, False, 1, 1, v
    )
    assert await backend.room_members(G) == (["1"], v)
    assert await backend.room_leave(G, "1", "tab-1") == MemberChange(G, "1", False, False, 1, 1, v)
    assert await backend.room_count(G) == (1, v)
    last = await backend.room_leave(G, "1", "tab-2")
    assert last == MemberChange(G, "1", False, True, 1, 0, v + 1)


async def test_joining_again_refreshes_and_changes_nothing(backend: BasePresenceBackend) -> None:
    first = await backend.room_join(G, "1", "a", ttl=TTL)
    again = await backend.room_join(G, "1", "a", ttl=30)

    assert again == MemberChange(G, "1", True, False, 1, 1, first.version)
    await asyncio.sleep(TTL + 0.1)
    assert await backend.room_sweep([G]) == []
    assert await backend.room_count(G) == (1, first.version)


async def test_versions_increase_on_user_level_changes_only(
    backend: BasePresenceBackend,
) -> None:
    versions = [(await backend.room_join(G, "0", "keep", ttl=30)).version]
    for user in ("1", "2", "3"):
        versions.append((await backend.room_join(G, user, "a", ttl=30)).version)
        # Silent steps: a second tab, a refresh, leaving the second tab.
        assert (await backend.room_join(G, user, "b", ttl=30)).version == versions[-1]
        assert (await backend.room_join(G, user, "b", ttl=30)).version == versions[-1]
        await backend.room_refresh([(G, user, "a"), (G, user, "b")], ttl=30)
        assert await backend.room_count(G) == (2, versions[-1])  # "0" and user
        assert (await backend.room_leave(G, user, "b")).version == versions[-1]
        versions.append((await backend.room_leave(G, user, "a")).version)

    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert await backend.room_members(G) == (["0"], versions[-1])


async def test_members_and_count(backend: BasePresenceBackend) -> None:
    assert await backend.room_members(G) == ([], 0)
    assert await backend.room_count(G) == (0, 0)
    for user in ("1", "2", "3"):
        await backend.room_join(G, user, "a", ttl=30)
        await backend.room_join(G, user, "b", ttl=30)
    await backend.room_join("other", "4", "a", ttl=30)

    members, version = await backend.room_members(G)
    assert sorted(members) == ["1", "2", "3"]
    assert await backend.room_count(G) == (3, version)
    assert await backend.room_members("other") == (["4"], 1)


async def test_an_expired_membership_is_swept_and_its_leave_reported_once(
    backend: BasePresenceBackend,
) -> None:
    await backend.room_join(G, "1", "alive", ttl=30)
    await backend.room_join(G, "1", "crashed-tab", ttl=0.2)  # still in by "alive"
    joined = await backend.room_join(G, "2", "crashed", ttl=0.2)

    [change] = await sweep_until(backend, [G], 1)

    assert change == MemberChange(G, "2", False, True, 2, 1, joined.version + 1)
    await asyncio.sleep(0.1)
    assert await backend.room_sweep([G]) == []
    assert await backend.room_members(G) == (["1"], joined.version + 1)
    # The crashed tab was removed silently: leaving by it now changes nothing.
    assert not (await backend.room_leave(G, "1", "crashed-tab")).changed
    assert (await backend.room_leave(G, "1", "alive")).changed


async def test_sweep_touches_only_the_named_groups(backend: BasePresenceBackend) -> None:
    for group in ("g1", "g2", "g3"):
        await backend.room_join(group, "1", "a", ttl=0.3)
    await asyncio.sleep(0.4)  # Expired; a backend may forget the group after 0.6 s.

    changes = await backend.room_sweep(["g1", "g3", "g1", "nobody-here"])

    assert sorted((c.group, c.user_id, c.joined, c.count) for c in changes) == [
        ("g1", "1", False, 0),
        ("g3", "1", False, 0),
    ]
    assert await backend.room_count("g2") == (1, 1)
    assert await backend.room_sweep([]) == []


async def test_sweep_limit_is_per_group(backend: BasePresenceBackend) -> None:
    for user in range(5):
        await backend.room_join("g1", str(user), "a", ttl=0.3)
        await backend.room_join("g2", str(user), "a", ttl=0.3)
    await asyncio.sleep(0.4)

    first = await backend.room_sweep(["g1", "g2"], limit=2)
    second = await backend.room_sweep(["g1", "g2"], limit=2)
    third = await backend.room_sweep(["g1", "g2"], limit=2)

    assert [len(r) for r in (first, second, third)] == [4, 4, 2]
    for group in ("g1", "g2"):
        gone = [c for r in (first, second, third) for c in r if c.group == group]
        assert sorted(c.user_id for c in gone) == [str(u) for u in range(5)]
        assert [c.count for c in gone] == [4, 3, 2, 1, 0]
        assert await backend.room_members(group) == ([], 0)


async def test_refresh_keeps_memberships_alive_past_their_ttl(
    backend: BasePresenceBackend,
) -> None:
    held = [(group, user, "a") for group in ("g1", "g2") for user in ("1", "2")]
    for group, user, member in held:
        await backend.room_join(group, user, member, ttl=0.2)
    await backend.room_join("g1", "3", "a", ttl=0.2)  # not refreshed

    for _ in range(3):
        await asyncio.sleep(0.1)
        await backend.room_refresh(held, ttl=0.2)
    changes = await backend.room_sweep(["g1", "g2"])

    assert [(c.group, c.user_id) for c in changes] == [("g1", "3")]
    assert sorted((await backend.room_members("g1"))[0]) == ["1", "2"]
    assert sorted((await backend.room_members("g2"))[0]) == ["1", "2"]
    await backend.room_refresh([], ttl=30)


async def test_refresh_does_not_create_a_missing_membership(
    backend: BasePresenceBackend,
) -> None:
    await backend.room_refresh([(G, "1", "a")], ttl=30)
    assert await backend.room_members(G) == ([], 0)

    joined = await backend.room_join(G, "2", "b", ttl=30)
    await backend.room_join(G, "3", "c", ttl=30)
    await backend.room_leave(G, "3", "c")
    await backend.room_refresh([(G, "1", "a"), (G, "3", "c"), (G, "2", "zz")], ttl=30)

    assert await backend.room_members(G) == (["2"], joined.version + 2)


async def test_an_empty_group_is_forgotten(
    backend: BasePresenceBackend, backend_name: str, presence: dict[str, Any]
) -> None:
    """Group names used once cost nothing: an emptied group leaves nothing behind."""
    await backend.room_join(G, "1", "a", ttl=30)
    await backend.room_join(G, "1", "b", ttl=30)
    await backend.room_join(G, "2", "c", ttl=0.1)
    await backend.room_leave(G, "1", "a")
    await backend.room_leave(G, "1", "b")
    await sweep_until(backend, [G], 1)

    assert await backend.room_members(G) == ([], 0)
    assert await backend.room_count(G) == (0, 0)
    if backend_name != "memory":
        assert await room_keys(backend, presence, G) == []
    again = await backend.room_join(G, "1", "a", ttl=30)
    assert (again.count_before, again.count, again.version) == (0, 1, 1)


async def test_clear_removes_rooms(
    backend: BasePresenceBackend, backend_name: str, presence: dict[str, Any]
) -> None:
    await backend.room_join(G, "1", "a", ttl=30)
    await backend.room_join("other", "2", "a", ttl=30)

    await backend.clear()

    assert await backend.room_members(G) == ([], 0)
    assert await backend.room_count("other") == (0, 0)
    assert await backend.room_sweep([G, "other"]) == []
    if backend_name != "memory":
        assert await room_keys(backend, presence, "*") == []


ODD_IDS = ["user:with:colons", "5:tricky", "ünïcødé-ユーザー", "x" * 300]


@pytest.mark.parametrize("user_id", ODD_IDS)
async def test_odd_ids_in_rooms(backend: BasePresenceBackend, user_id: str) -> None:
    # A user whose id is a prefix of the other's, with the same member id, stays apart.
    other = user_id[:-1]
    await backend.room_join(G, other, "m:1", ttl=30)
    await backend.room_join(G, user_id, "m:1", ttl=0.3)
    await backend.room_join(G, user_id, "ü|2", ttl=0.3)

    await backend.room_refresh([(G, user_id, "m:1")], ttl=30)
    await asyncio.sleep(0.4)

    assert await backend.room_sweep([G]) == []  # "ü|2" went silently, "m:1" was refreshed
    assert sorted((await backend.room_members(G))[0]) == sorted([other, user_id])
    assert not (await backend.room_leave(G, user_id, "ü|2")).changed
    assert (await backend.room_leave(G, user_id, "m:1")).changed
    assert (await backend.room_members(G))[0] == [other]


async def test_concurrent_joins_decide_each_user_once(backend: BasePresenceBackend) -> None:
    changes = await asyncio.gather(
        *(backend.room_join(G, str(i % 10), f"m{i}", ttl=30) for i in range(50))
    )

    joined = [c for c in changes if c.changed]
    assert sorted(c.user_id for c in joined) == [str(u) for u in range(10)]
    assert sorted(c.version for c in joined) == list(range(1, 11))
    assert sorted(c.count for c in joined) == list(range(1, 11))
    assert await backend.room_count(G) == (10, 10)


async def test_now_advances_and_is_the_clock_of_the_leases(
    backend: BasePresenceBackend,
) -> None:
    before = await backend.now()
    await backend.add_connection("1", "a", ttl=30)
    await asyncio.sleep(0.05)
    after = await backend.now()

    [info] = await backend.user_connections("1")
    assert 0.04 < after - before < 5
    # Lease times may be stored in whole milliseconds.
    assert before - 0.002 <= info.opened_at <= after
    assert info.expires_at == pytest.approx(before + 30, abs=0.5)
    assert info.expires_at - await backend.now() == pytest.approx(30, abs=0.5)


ROOM_CALLS = {
    "now": lambda b: b.now(),
    "room_join": lambda b: b.room_join(G, "1", "a", ttl=30),
    "room_leave": lambda b: b.room_leave(G, "1", "a"),
    "room_members": lambda b: b.room_members(G),
    "room_count": lambda b: b.room_count(G),
    "room_refresh": lambda b: b.room_refresh([(G, "1", "a")], ttl=30),
    "room_sweep": lambda b: b.room_sweep([G]),
}


class PresenceOnlyBackend(BasePresenceBackend):
    """A third-party backend written before rooms and now() joined the contract."""


@pytest.mark.parametrize("method", sorted(ROOM_CALLS))
async def test_a_backend_without_rooms_is_told_what_to_implement(method: str) -> None:
    with pytest.raises(NotImplementedError) as caught:
        await ROOM_CALLS[method](PresenceOnlyBackend())

    assert str(caught.value) == (f"{__name__}.PresenceOnlyBackend must implement {method}()")


# -- occupancy: the occupied flag ---------------------------------------------------------------


async def test_occupied_is_set_once_and_settled_once(backend: BasePresenceBackend) -> None:
    assert not await backend.room_occupied(G)  # nobody in the group
    await backend.room_join(G, "1", "a", ttl=30)

    assert await backend.room_occupied(G)
    assert not await backend.room_occupied(G)
    assert not await backend.room_settle(G)  # still occupied
    await backend.room_leave(G, "1", "a")

    assert await backend.room_settle(G)
    assert not await backend.room_settle(G)
    assert await backend.room_members(G) == ([], 0)


async def test_a_group_joined_again_before_settling_stays_occupied(
    backend: BasePresenceBackend,
) -> None:
    await backend.room_join(G, "1", "a", ttl=30)
    assert await backend.room_occupied(G)
    await backend.room_leave(G, "1", "a")

    again = await backend.room_join(G, "2", "b", ttl=30)

    assert again.count_before == 0
    assert not await backend.room_occupied(G)  # its emptying was never announced
    assert not await backend.room_settle(G)  # the earlier leave's settle: not empty
    await backend.room_leave(G, "2", "b")
    assert await backend.room_settle(G)
    await backend.room_join(G, "3", "c", ttl=30)
    assert await backend.room_occupied(G)  # a new occupancy


async def test_a_group_emptied_before_its_occupancy_was_announced_announces_nothing(
    backend: BasePresenceBackend,
) -> None:
    await backend.room_join(G, "1", "a", ttl=30)
    await backend.room_leave(G, "1", "a")

    assert not await backend.room_settle(G)
    assert not await backend.room_occupied(G)
    assert not await backend.room_settle(G)


async def test_a_group_emptied_by_a_sweep_settles(backend: BasePresenceBackend) -> None:
    await backend.room_join(G, "1", "crashed", ttl=0.2)
    assert await backend.room_occupied(G)

    [change] = await sweep_until(backend, [G], 1)

    assert change.count == 0
    assert await backend.room_settle(G)


async def test_concurrent_settles_take_the_flag_once(backend: BasePresenceBackend) -> None:
    groups = [f"g{i}" for i in range(5)]
    for group in groups:
        await backend.room_join(group, "1", "a", ttl=30)
        await backend.room_join(group, "2", "b", ttl=30)
    occupied = await asyncio.gather(*(backend.room_occupied(g) for g in groups * 4))
    assert sorted(occupied).count(True) == len(groups)
    for group in groups:
        await asyncio.gather(
            backend.room_leave(group, "1", "a"), backend.room_leave(group, "2", "b")
        )

    settled = await asyncio.gather(*(backend.room_settle(g) for g in groups * 4))

    assert sorted(g for g, won in zip(groups * 4, settled, strict=True) if won) == groups


async def test_the_occupied_flag_of_an_abandoned_group_expires(
    backend: BasePresenceBackend, backend_name: str, presence: dict[str, Any]
) -> None:
    """A group whose members were on crashed servers, swept by nobody, forgets its flag."""
    await backend.room_join(G, "1", "crashed", ttl=0.1)
    assert await backend.room_occupied(G)
    await asyncio.sleep(0.3)  # two leases, and a margin

    if backend_name != "memory":
        assert await room_keys(backend, presence, G) == []
    await backend.room_sweep([G])
    assert not await backend.room_settle(G)


async def test_refresh_keeps_the_occupied_flag(backend: BasePresenceBackend) -> None:
    # The flag expires two leases (1 s) after the join: refreshes keep it 1.25 s. (With
    # 0.2 s leases, one refresh 0.4 s late on a loaded machine failed the test.)
    await backend.room_join(G, "1", "a", ttl=0.5)
    assert await backend.room_occupied(G)
    for _ in range(5):
        await asyncio.sleep(0.25)
        await backend.room_refresh([(G, "1", "a")], ttl=0.5)
    await backend.room_leave(G, "1", "a")

    assert await backend.room_settle(G)


async def test_clear_removes_occupied_flags(backend: BasePresenceBackend) -> None:
    await backend.room_join(G, "1", "a", ttl=30)
    assert await backend.room_occupied(G)
    await backend.room_leave(G, "1", "a")

    await backend.clear()

    assert not await backend.room_settle(G)


async def test_a_backend_without_occupancy_announces_nothing() -> None:
    backend = PresenceOnlyBackend()
    assert not await backend.room_occupied(G)
    assert not await backend.room_settle(G)
