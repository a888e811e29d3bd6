"""The backend contract, continued: streams (message history, cursors, due publications).

Like ``test_backend_contract.py``, every test runs against every shipped backend (memory,
and Redis on a real server), and ``tests/faults/test_contract_many_servers.py`` runs them
again on Redis Sentinel and Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from django_presence.backends import BasePresenceBackend
from django_presence.backends.base import (
    StreamCursor,
    StreamLimits,
    StreamPosition,
    StreamRead,
    Undelivered,
)
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend

from .test_backend_contract import eventually
from .test_backend_contract_rooms import ODD_IDS

S = "user:1"
LIMITS = StreamLimits(size=50, ttl=60, meta_ttl=120)
# Deadlines of tracked publications: short, polled for with a bounded loop.
DELAY = 0.2


async def publish(
    backend: BasePresenceBackend,
    count: int,
    stream: str = S,
    limits: StreamLimits = LIMITS,
    track: tuple[str, float] | None = None,
) -> list[StreamPosition]:
    return [
        await backend.stream_publish(stream, f'{{"n": {i}}}', limits=limits, track=track)
        for i in range(1, count + 1)
    ]


async def read(
    backend: BasePresenceBackend,
    since: int | None,
    epoch: str | None,
    stream: str = S,
    limits: StreamLimits = LIMITS,
) -> StreamRead:
    [result] = await backend.stream_read([(stream, since, epoch)], limits=limits)
    return result


def offsets(result: StreamRead) -> list[int]:
    return [entry.offset for entry in result.entries]


async def due_until(backend: BasePresenceBackend, wanted: int) -> list[Undelivered]:
    """Take due publications until ``wanted`` were returned; return all of them."""
    taken: list[Undelivered] = []

    async def enough() -> bool:
        taken.extend(await backend.stream_due())
        return len(taken) >= wanted

    await eventually(enough, timeout=5, what=f"{wanted} due publications")
    return taken


async def stream_keys(backend: Any, presence: dict[str, Any]) -> list[Any]:
    """The Redis stream keys (and the due set) left under the backend's prefix."""
    tag = "{" + presence["KEY_PREFIX"] + "}"
    client = backend.client()
    keys = [key async for key in client.scan_iter(match=tag + ":s:*")]
    return keys + [key async for key in client.scan_iter(match=tag + ":due")]


# -- publishing and reading ------------------------------------------------------------------


async def test_offsets_start_at_one_and_increase_by_one_in_one_epoch(
    backend: BasePresenceBackend,
) -> None:
    positions = await publish(backend, 5)

    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions}) == 1
    assert positions[0].epoch
    assert await backend.stream_positions([S]) == {S: positions[-1]}


async def test_a_reader_gets_exactly_the_entries_it_missed_in_order(
    backend: BasePresenceBackend,
) -> None:
    before = await backend.now()
    [*_, last] = await publish(backend, 5)
    after = await backend.now()

    result = await read(backend, 2, last.epoch)

    assert (result.stream, result.epoch, result.offset, result.recovered) == (
        S,
        last.epoch,
        5,
        True,
    )
    assert offsets(result) == [3, 4, 5]
    assert [json.loads(e.payload) for e in result.entries] == [{"n": 3}, {"n": 4}, {"n": 5}]
    for entry in result.entries:
        # Times may be stored in whole milliseconds.
        assert before - 0.002 <= entry.time <= after + 0.002
    assert await read(backend, 5, last.epoch) == StreamRead(S, last.epoch, 5, (), True)
    assert offsets(await read(backend, 0, last.epoch)) == [1, 2, 3, 4, 5]


async def test_reading_the_position_only_creates_the_epoch_once(
    backend: BasePresenceBackend,
) -> None:
    assert await backend.stream_positions([S]) == {S: None}

    first, second = await asyncio.gather(read(backend, None, None), read(backend, None, None))

    assert first == second == StreamRead(S, first.epoch, 0, (), True)
    assert first.epoch
    assert await backend.stream_positions([S]) == {S: StreamPosition(first.epoch, 0)}
    # A client that saw nothing yet (offset 0 in that epoch) recovers everything after.
    [published] = await publish(backend, 1)
    assert published == StreamPosition(first.epoch, 1)
    assert offsets(await read(backend, 0, first.epoch)) == [1]


async def test_position_reads_of_known_streams_return_no_entries(
    backend: BasePresenceBackend,
) -> None:
    [*_, last] = await publish(backend, 3)

    assert await read(backend, None, "whatever") == StreamRead(S, last.epoch, 3, (), True)


@pytest.mark.parametrize(
    ("since", "epoch"), [(1, "other-epoch"), (1, None), (4, "ours"), (-1, "ours")]
)
async def test_an_offset_the_stream_cannot_serve_is_not_recovered(
    backend: BasePresenceBackend, since: int, epoch: str | None
) -> None:
    [*_, last] = await publish(backend, 3)
    if epoch == "ours":
        epoch = last.epoch

    result = await read(backend, since, epoch)

    assert (result.epoch, result.offset, result.recovered) == (last.epoch, 3, False)


async def test_entries_trimmed_by_size_are_not_recovered(backend: BasePresenceBackend) -> None:
    small = StreamLimits(size=3, ttl=60, meta_ttl=120)
    [*_, last] = await publish(backend, 6, limits=small)

    gap = await read(backend, 1, last.epoch, limits=small)
    whole = await read(backend, 3, last.epoch, limits=small)

    assert (offsets(gap), gap.recovered) == ([4, 5, 6], False)
    assert (offsets(whole), whole.recovered) == ([4, 5, 6], True)
    # A smaller size at read time applies at once.
    smaller = await read(backend, 3, last.epoch, limits=StreamLimits(size=2, ttl=60))
    assert (offsets(smaller), smaller.recovered) == ([5, 6], False)


async def test_entries_older_than_the_ttl_are_not_recovered_but_the_epoch_stays(
    backend: BasePresenceBackend,
) -> None:
    short = StreamLimits(size=50, ttl=DELAY, meta_ttl=60)
    [*_, last] = await publish(backend, 2, limits=short)

    async def expired() -> bool:
        # Both entries aged out: each at its own time, as they were published apart (on a
        # busy machine the second can outlive the first by more than one poll).
        result = await read(backend, 0, last.epoch, limits=short)
        return not result.recovered and offsets(result) == []

    await eventually(expired, timeout=5, what="history older than its ttl")
    assert offsets(await read(backend, 0, last.epoch, limits=short)) == []
    # Whoever saw the latest entry still recovers: nothing to replay, same epoch.
    assert await read(backend, 2, last.epoch, limits=short) == StreamRead(
        S, last.epoch, 2, (), True
    )
    [next_one] = await publish(backend, 1, limits=short)
    assert next_one == StreamPosition(last.epoch, 3)
    assert offsets(await read(backend, 2, last.epoch, limits=short)) == [3]


async def test_only_the_entries_older_than_the_ttl_are_skipped(
    backend: BasePresenceBackend,
) -> None:
    short = StreamLimits(size=50, ttl=0.6, meta_ttl=60)
    [old] = await publish(backend, 1, limits=short)
    await asyncio.sleep(0.35)
    await publish(backend, 1, limits=short)  # keeps the history alive on Redis
    requests = [(S, 0, old.epoch), (S, 1, old.epoch)]

    async def first_gone() -> list[StreamRead] | None:
        results = await backend.stream_read(requests, limits=short)
        return None if results[0].recovered else results

    gap, whole = await eventually(first_gone, timeout=5, what="the first entry aged out")
    assert (offsets(gap), gap.recovered) == ([2], False)
    assert (offsets(whole), whole.recovered) == ([2], True)


async def test_after_a_loss_of_the_store_readers_are_told_and_a_new_epoch_starts(
    backend: BasePresenceBackend,
) -> None:
    [*_, last] = await publish(backend, 3)

    await backend.clear()

    [first] = await publish(backend, 1)
    assert first.offset == 1
    assert first.epoch != last.epoch
    result = await read(backend, 3, last.epoch)
    assert (result.epoch, result.offset, result.recovered) == (first.epoch, 1, False)


async def test_a_reader_after_a_loss_gets_a_new_epoch(backend: BasePresenceBackend) -> None:
    [*_, last] = await publish(backend, 3)
    await backend.clear()

    result = await read(backend, 2, last.epoch)

    assert (result.offset, result.recovered, result.entries) == (0, False, ())
    assert result.epoch != last.epoch
    assert (await publish(backend, 1))[0] == StreamPosition(result.epoch, 1)


async def test_clear_removes_streams(
    backend: BasePresenceBackend, backend_name: str, presence: dict[str, Any]
) -> None:
    [position] = await publish(backend, 1, track=("1", 0))
    await backend.stream_ack([(S, "1", position.epoch, 1, 0)], limits=LIMITS)

    await backend.clear()

    assert await backend.stream_positions([S]) == {S: None}
    assert await backend.stream_cursor(S, "1") is None
    assert await backend.stream_due() == []
    if backend_name != "memory":
        assert await stream_keys(backend, presence) == []


async def test_positions_of_many_streams_in_one_call(backend: BasePresenceBackend) -> None:
    names = [f"room:{i}" for i in range(30)]
    for i, name in enumerate(names[:20]):
        await publish(backend, i % 3 + 1, stream=name)

    positions = await backend.stream_positions([*names, names[0]])

    assert list(positions) == names
    assert [p.offset if p else None for p in positions.values()] == [
        *[i % 3 + 1 for i in range(20)],
        *[None] * 10,
    ]
    assert await backend.stream_positions([]) == {}
    assert await backend.stream_positions(names[25:]) == dict.fromkeys(names[25:])


async def test_many_streams_are_read_in_one_call_in_request_order(
    backend: BasePresenceBackend,
) -> None:
    a = (await publish(backend, 3, stream="a"))[-1]
    b = (await publish(backend, 2, stream="b"))[-1]

    results = await backend.stream_read(
        [("b", 1, b.epoch), ("new", None, None), ("a", 0, a.epoch), ("a", 9, a.epoch)],
        limits=LIMITS,
    )

    assert [(r.stream, r.offset, offsets(r), r.recovered) for r in results] == [
        ("b", 2, [2], True),
        ("new", 0, [], True),
        ("a", 3, [1, 2, 3], True),
        ("a", 3, [], False),
    ]
    assert await backend.stream_read([], limits=LIMITS) == []


async def test_streams_whose_names_prefix_each_other_stay_apart(
    backend: BasePresenceBackend,
) -> None:
    names = ["a", "a:m", "a:l", "a:a", "a:", ":a", "a:m:m"]
    for i, name in enumerate(names):
        await publish(backend, i + 1, stream=name)

    positions = await backend.stream_positions(names)

    assert [positions[n].offset for n in names] == [1, 2, 3, 4, 5, 6, 7]  # type: ignore[union-attr]
    for i, name in enumerate(names):
        result = await read(backend, 0, positions[name].epoch, stream=name)  # type: ignore[union-attr]
        assert (offsets(result), result.recovered) == (list(range(1, i + 2)), True)


async def test_large_json_payloads_round_trip(backend: BasePresenceBackend) -> None:
    payload = json.dumps({"text": 'ü€ {x} "quoted"\n' * 20_000, "n": [1, 2.5, None]})
    assert len(payload) > 300_000

    position = await backend.stream_publish(S, payload, limits=LIMITS)
    result = await read(backend, 0, position.epoch)

    assert [e.payload for e in result.entries] == [payload]


# -- cursors -----------------------------------------------------------------------------------


async def test_cursors_start_at_zero_and_need_an_epoch(backend: BasePresenceBackend) -> None:
    assert await backend.stream_cursor(S, "1") is None
    await backend.stream_ack([(S, "1", "any", 1, 1)], limits=LIMITS)  # no stream: ignored
    assert await backend.stream_cursor(S, "1") is None
    assert await backend.stream_positions([S]) == {S: None}

    position = (await read(backend, None, None)).epoch
    assert await backend.stream_cursor(S, "1") == StreamCursor(position, 0, 0, 0)


async def test_acks_only_grow_and_are_capped_to_the_latest_offset(
    backend: BasePresenceBackend,
) -> None:
    [*_, last] = await publish(backend, 5)
    e = last.epoch

    await backend.stream_ack([(S, "1", e, 3, 2)], limits=LIMITS)
    assert await backend.stream_cursor(S, "1") == StreamCursor(e, 5, 3, 2)

    await backend.stream_ack([(S, "1", e, 1, 1)], limits=LIMITS)  # older: no effect
    assert await backend.stream_cursor(S, "1") == StreamCursor(e, 5, 3, 2)

    await backend.stream_ack([(S, "1", e, 0, 4)], limits=LIMITS)  # delivered >= acked
    assert await backend.stream_cursor(S, "1") == StreamCursor(e, 5, 4, 4)

    await backend.stream_ack([(S, "1", e, 99, 99)], limits=LIMITS)  # capped
    assert await backend.stream_cursor(S, "1") == StreamCursor(e, 5, 5, 5)

    await backend.stream_ack([(S, "2", e, 9, 1)], limits=LIMITS)
    assert await backend.stream_cursor(S, "2") == StreamCursor(e, 5, 5, 1)
    assert await backend.stream_cursor(S, "3") == StreamCursor(e, 5, 0, 0)


async def test_acks_in_another_epoch_are_ignored(backend: BasePresenceBackend) -> None:
    [*_, old] = await publish(backend, 3)
    await backend.clear()
    [*_, new] = await publish(backend, 2)

    await backend.stream_ack([(S, "1", old.epoch, 3, 3)], limits=LIMITS)

    assert await backend.stream_cursor(S, "1") == StreamCursor(new.epoch, 2, 0, 0)


async def test_many_acks_in_one_call(backend: BasePresenceBackend) -> None:
    a = (await publish(backend, 3, stream="a"))[-1]
    b = (await publish(backend, 2, stream="b"))[-1]

    await backend.stream_ack(
        [
            ("a", "1", a.epoch, 2, 1),
            ("b", "1", b.epoch, 2, 2),
            ("a", "1", a.epoch, 3, 2),
            ("a", "2", b.epoch, 3, 3),  # b's epoch on a: ignored (unless they are equal)
            ("missing", "1", a.epoch, 1, 1),
        ],
        limits=LIMITS,
    )

    assert await backend.stream_cursor("a", "1") == StreamCursor(a.epoch, 3, 3, 2)
    assert await backend.stream_cursor("b", "1") == StreamCursor(b.epoch, 2, 2, 2)
    if a.epoch != b.epoch:
        assert await backend.stream_cursor("a", "2") == StreamCursor(a.epoch, 3, 0, 0)
    assert await backend.stream_cursor("missing", "1") is None
    await backend.stream_ack([], limits=LIMITS)


# -- due publications ------------------------------------------------------------------------


async def test_an_unacknowledged_publication_is_due_once_after_its_deadline(
    backend: BasePresenceBackend,
) -> None:
    before = await backend.now()
    [position] = await publish(backend, 1, track=("7", DELAY))
    await publish(backend, 1)  # untracked: never due

    assert await backend.stream_due() == []  # the deadline is not there yet
    [due] = await due_until(backend, 1)

    assert await backend.now() - before >= DELAY - 0.01
    assert (due.stream, due.user_id, due.epoch, due.offset) == (S, "7", position.epoch, 1)
    assert json.loads(due.payload or "") == {"n": 1}
    assert before - 0.002 <= due.time <= before + DELAY
    await asyncio.sleep(0.05)
    assert await backend.stream_due() == []


async def test_acknowledged_publications_are_dropped(backend: BasePresenceBackend) -> None:
    positions = await publish(backend, 4, track=("7", 0))
    await backend.stream_ack([(S, "7", positions[0].epoch, 4, 2)], limits=LIMITS)
    # Another user's acks do not count.
    await backend.stream_ack([(S, "8", positions[0].epoch, 4, 4)], limits=LIMITS)

    due = await due_until(backend, 2)

    assert [(d.user_id, d.offset) for d in due] == [("7", 3), ("7", 4)]
    await asyncio.sleep(0.05)
    assert await backend.stream_due() == []


async def test_a_publication_trimmed_before_its_deadline_is_due_without_payload(
    backend: BasePresenceBackend,
) -> None:
    small = StreamLimits(size=1, ttl=60, meta_ttl=120)
    before = await backend.now()
    [first] = await publish(backend, 1, limits=small, track=("7", DELAY))
    await publish(backend, 1, limits=small)

    [due] = await due_until(backend, 1)

    assert (due.offset, due.payload, due.epoch) == (1, None, first.epoch)
    assert before - 0.002 <= due.time <= before + DELAY  # when it was published


async def test_a_publication_older_than_the_ttl_at_its_deadline_is_due_without_payload(
    backend: BasePresenceBackend,
) -> None:
    short = StreamLimits(size=50, ttl=0.1, meta_ttl=60)
    await publish(backend, 1, stream="quiet", limits=short, track=("7", 0.3))
    await publish(backend, 1, stream="busy", limits=short, track=("7", 0.3))
    for _ in range(3):  # keeps the busy stream's history alive past the deadline
        await asyncio.sleep(0.08)
        await publish(backend, 1, stream="busy", limits=short)

    due = await due_until(backend, 2)

    assert sorted((d.stream, d.offset, d.payload) for d in due) == [
        ("busy", 1, None),
        ("quiet", 1, None),
    ]


async def test_due_publications_come_oldest_deadline_first_up_to_the_limit(
    backend: BasePresenceBackend,
) -> None:
    await backend.stream_publish("late", "1", limits=LIMITS, track=("1", 0.1))
    await backend.stream_publish("early", "2", limits=LIMITS, track=("1", 0))
    await backend.stream_publish("early", "3", limits=LIMITS, track=("2", 0.05))
    await asyncio.sleep(0.15)

    first = await backend.stream_due(limit=2)
    rest = await backend.stream_due(limit=2)

    assert [(d.stream, d.offset) for d in first] == [("early", 1), ("early", 2)]
    assert [(d.stream, d.offset) for d in rest] == [("late", 1)]


async def test_concurrent_callers_never_both_take_a_publication(
    backend: BasePresenceBackend,
) -> None:
    streams = [f"s{i}" for i in range(5)]
    for name in streams:
        await publish(backend, 8, stream=name, track=("1", 0))
    # Acked ones are dropped, not handed to another caller.
    epoch = (await backend.stream_positions(["s0"]))["s0"].epoch  # type: ignore[union-attr]
    await backend.stream_ack([("s0", "1", epoch, 8, 8)], limits=LIMITS)

    taken: list[Undelivered] = []

    async def all_taken() -> bool:
        results = await asyncio.gather(*(backend.stream_due(limit=7) for _ in range(6)))
        taken.extend(d for result in results for d in result)
        return len(taken) >= 32

    await eventually(all_taken, timeout=5, what="every due publication taken")
    keys = [(d.stream, d.offset) for d in taken]
    assert sorted(keys) == sorted((name, i) for name in streams[1:] for i in range(1, 9))
    assert await backend.stream_due() == []


# -- odd names -----------------------------------------------------------------------------


ODD_STREAMS = [*ODD_IDS, "{braces}:x", "with space", " ", "é:1:"]


@pytest.mark.parametrize("name", ODD_STREAMS)
async def test_odd_stream_names_and_user_ids(backend: BasePresenceBackend, name: str) -> None:
    user = name[::-1] + ":ü"
    other = name[:-1]  # a prefix of the name, kept apart
    await publish(backend, 1, stream=other, track=(user[:-1], 0))
    positions = await publish(backend, 3, stream=name, track=(user, 0))
    e = positions[-1].epoch

    result = await read(backend, 1, e, stream=name)
    assert (offsets(result), result.recovered) == ([2, 3], True)
    await backend.stream_ack([(name, user, e, 2, 1)], limits=LIMITS)
    assert await backend.stream_cursor(name, user) == StreamCursor(e, 3, 2, 1)
    assert await backend.stream_cursor(name, user[:-1]) == StreamCursor(e, 3, 0, 0)
    assert (await backend.stream_positions([name, other]))[other] == StreamPosition(
        (await backend.stream_positions([other]))[other].epoch,  # type: ignore[union-attr]
        1,
    )

    due = await due_until(backend, 3)
    assert sorted((d.stream, d.user_id, d.offset, d.payload) for d in due) == sorted(
        [
            (other, user[:-1], 1, '{"n": 1}'),
            (name, user, 2, '{"n": 2}'),
            (name, user, 3, '{"n": 3}'),
        ]
    )


# -- both backends alike -------------------------------------------------------------------


def test_both_backends_keep_the_same_streams(redis_url: str) -> None:
    """Random operation sequences give the same answers on memory and on Redis.

    Epochs are random strings, so each backend's are numbered in order of appearance and
    compared by number; a reader may send the current epoch, an older one, a wrong one or
    none.
    """
    small = StreamLimits(size=2, ttl=60, meta_ttl=120)
    names = ["a", "ü"]
    streams = st.sampled_from(names)
    users = st.sampled_from(["1", "2"])
    epochs = st.sampled_from(["current", "first", "wrong", "none"])
    offsets_ = st.integers(-1, 6)

    class SameStreams(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.memory = MemoryBackend()
            self.redis = RedisBackend(url=redis_url, key_prefix=f"sdiff-{uuid.uuid4().hex[:8]}")
            # Per backend: stream -> the epochs seen, in order.
            self.seen: tuple[dict[str, list[str]], dict[str, list[str]]] = ({}, {})
            self.published = 0

        def both(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            async def run(backend: BasePresenceBackend, i: int) -> Any:
                call_args = [a(i) if callable(a) else a for a in args]
                return await getattr(backend, name)(*call_args, **kwargs)

            return (
                self.loop.run_until_complete(run(self.memory, 0)),
                self.loop.run_until_complete(run(self.redis, 1)),
            )

        def number(self, i: int, stream: str, epoch: str) -> int:
            seen = self.seen[i].setdefault(stream, [])
            if epoch not in seen:
                seen.append(epoch)
            return seen.index(epoch)

        def epoch(self, i: int, stream: str, which: str) -> str | None:
            seen = self.seen[i].get(stream)
            if which == "none" or (not seen and which != "wrong"):
                return None
            if which == "wrong":
                return "not-an-epoch"
            return seen[-1] if which == "current" else seen[0]  # type: ignore[index]

        @rule(stream=streams, tracked=st.booleans(), user=users)
        def publish(self, stream: str, tracked: bool, user: str) -> None:
            self.published += 1
            track = (user, 0) if tracked else None
            results = self.both(
                "stream_publish", stream, f"p{self.published}", limits=small, track=track
            )
            m, r = ((self.number(i, stream, p.epoch), p.offset) for i, p in enumerate(results))
            assert m == r

        @rule(stream=streams, since=st.none() | offsets_, which=epochs)
        def read(self, stream: str, since: int | None, which: str) -> None:
            results = self.both(
                "stream_read",
                lambda i: [(stream, since, self.epoch(i, stream, which))],
                limits=small,
            )
            m, r = (
                (
                    self.number(i, stream, res.epoch),
                    res.offset,
                    [(e.offset, e.payload) for e in res.entries],
                    res.recovered,
                )
                for i, [res] in enumerate(results)
            )
            assert m == r

        @rule(stream=streams, user=users, which=epochs, delivered=offsets_, acked=offsets_)
        def ack(self, stream: str, user: str, which: str, delivered: int, acked: int) -> None:
            self.both(
                "stream_ack",
                lambda i: [(stream, user, self.epoch(i, stream, which) or "", delivered, acked)],
                limits=small,
            )

        @rule()
        def due(self) -> None:
            results = self.both("stream_due")
            m, r = (
                sorted(
                    (d.stream, d.user_id, self.number(i, d.stream, d.epoch), d.offset, d.payload)
                    for d in res
                )
                for i, res in enumerate(results)
            )
            assert m == r

        @rule()
        def clear(self) -> None:
            self.both("clear")

        @invariant()
        def same_positions_and_cursors(self) -> None:
            m, r = (
                [
                    None if p is None else (self.number(i, n, p.epoch), p.offset)
                    for n, p in res.items()
                ]
                for i, res in enumerate(self.both("stream_positions", names))
            )
            assert m == r
            for name in names:
                for user in ("1", "2"):
                    m, r = (
                        None
                        if c is None
                        else (self.number(i, name, c.epoch), c.offset, c.delivered, c.acked)
                        for i, c in enumerate(self.both("stream_cursor", name, user))
                    )
                    assert m == r

        def teardown(self) -> None:
            self.loop.run_until_complete(self.redis.clear())
            self.loop.run_until_complete(self.redis.aclose())
            self.loop.close()

    run_state_machine_as_test(
        SameStreams,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- third-party backends ------------------------------------------------------------------


STREAM_CALLS = {
    "stream_publish": lambda b: b.stream_publish(S, "{}", limits=LIMITS),
    "stream_read": lambda b: b.stream_read([(S, None, None)], limits=LIMITS),
    "stream_positions": lambda b: b.stream_positions([S]),
    "stream_ack": lambda b: b.stream_ack([(S, "1", "e", 1, 1)], limits=LIMITS),
    "stream_cursor": lambda b: b.stream_cursor(S, "1"),
    "stream_due": lambda b: b.stream_due(),
}


class RoomsOnlyBackend(BasePresenceBackend):
    """A third-party backend written before streams joined the contract."""


@pytest.mark.parametrize("method", sorted(STREAM_CALLS))
async def test_a_backend_without_streams_is_told_what_to_implement(method: str) -> None:
    with pytest.raises(NotImplementedError) as caught:
        await STREAM_CALLS[method](RoomsOnlyBackend())

    assert str(caught.value) == (f"{__name__}.RoomsOnlyBackend must implement {method}()")
