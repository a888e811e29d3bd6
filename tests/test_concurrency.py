"""Many connects and disconnects of the same few users at once, through the real service.

The original app lost and duplicated online/offline events under exactly this load (see
LESSONS.md: 70 to 93 "online" events instead of 200). Here every transition is decided by
one atomic backend step, so after any interleaving:

- the backend's online set is exactly the users that kept a connection open;
- ``is_online`` in the DB (the user model's field, or the package's table) agrees with
  the backend for every user;
- each user's signals, ordered by ``seq``, alternate online / offline, one per transition
  the backend decided, no more and no fewer.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.backends import Change, Transition
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend
from django_presence.services import user_online_service
from django_presence.store import database_copy

from .conftest import SignalLog

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()

_decided: list[Change] = []
_decided_lock = threading.Lock()


def _record(changes: Sequence[Change]) -> None:
    with _decided_lock:
        _decided.extend(c for c in changes if c.changed)


class _Recording:
    """Mixin for a real backend that also records every transition it decides."""

    async def add_connection(self, *args: Any, **kwargs: Any) -> Change:
        change: Change = await super().add_connection(*args, **kwargs)  # type: ignore[misc]
        _record([change])
        return change

    async def remove_connection(self, *args: Any, **kwargs: Any) -> Change:
        change: Change = await super().remove_connection(*args, **kwargs)  # type: ignore[misc]
        _record([change])
        return change

    async def remove_user(self, user_id: str) -> tuple[int, Change]:
        removed, change = await super().remove_user(user_id)  # type: ignore[misc]
        _record([change])
        return removed, change

    async def heartbeat(self, *args: Any, **kwargs: Any) -> list[tuple[str, Change]]:
        restored = await super().heartbeat(*args, **kwargs)  # type: ignore[misc]
        _record([change for _, change in restored])
        return restored  # type: ignore[no-any-return]

    async def sweep(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().sweep(*args, **kwargs)  # type: ignore[misc]
        _record(result.changes)
        return result


class RecordingMemoryBackend(_Recording, MemoryBackend):
    """The memory backend, recording its transitions."""


class RecordingRedisBackend(_Recording, RedisBackend):
    """The Redis backend, recording its transitions."""


@pytest.fixture
def recording(presence: dict[str, Any], backend_name: str) -> Iterator[list[Change]]:
    """Switch the configured backend to its recording twin; yield the recorded changes."""
    path = f"tests.test_concurrency.Recording{backend_name.capitalize()}Backend"
    with _decided_lock:
        _decided.clear()
    with override_settings(DJANGO_PRESENCE={**presence, "BACKEND": path}):
        yield _decided


def make_users(count: int) -> list[Any]:
    return [User.objects.create_user(username=f"user{i}") for i in range(count)]


def assert_settled(
    users: list[Any], expected_online: set[Any], decided: list[Change], signals: SignalLog
) -> None:
    """The end state every interleaving must reach (see the module docstring)."""
    pks = [u.pk for u in users]
    assert user_online_service.get_online_user_ids(pks) == expected_online
    copy = database_copy()  # the user model's is_online, or the package's table
    assert copy is not None
    db_online = set(copy.online_pks()) & set(pks)
    assert db_online == expected_online
    for pk in pks:
        decided_kinds = [
            c.transition.value
            for c in sorted(decided, key=lambda c: c.seq)
            if c.user_id == str(pk)
        ]
        kinds = signals.of(pk)
        assert kinds == decided_kinds, f"user {pk}: signals differ from the backend's decisions"
        expected = ["online", "offline"] * (len(kinds) // 2)
        if pk in expected_online:
            expected.append("online")
        assert kinds == expected, f"user {pk}: signals do not alternate"
    seqs = [seq for _, _, seq in signals.events]
    assert len(seqs) == len(set(seqs)) == len(decided)


def arrival_disorder(signals: SignalLog, pks: list[Any]) -> int:
    """How many signals arrived after a signal of the same user with a higher seq."""
    late = 0
    for pk in pks:
        highest = 0
        for _, user_id, seq in signals.events:
            if user_id == pk:
                late += seq < highest
                highest = max(highest, seq)
    return late


@pytest.mark.parametrize("store", ["user", "table"])
async def test_interleaved_connects_and_disconnects(
    recording: list[Change], signal_log: SignalLog, store: str
) -> None:
    with override_settings(DJANGO_PRESENCE={**settings.DJANGO_PRESENCE, "STORE": store}):
        await interleaved_connects_and_disconnects(recording, signal_log)


async def interleaved_connects_and_disconnects(
    recording: list[Change], signal_log: SignalLog
) -> None:
    users = await database_sync_to_async(make_users)(6)
    pks = [u.pk for u in users]
    rng = random.Random(1234)
    keep_open: dict[int, Any] = {}  # worker -> user pk of the connection it leaves open

    async def worker(number: int) -> None:
        worker_rng = random.Random(rng.random())
        for _ in range(24):
            pk = worker_rng.choice(pks)
            cid = await user_online_service.aadd_user_connection(pk)
            for _ in range(worker_rng.randrange(4)):
                await asyncio.sleep(0)
            await user_online_service.aremove_user_connection(pk, cid)
        if number % 5 == 0:
            keep_open[number] = pks[number % len(pks)]
            await user_online_service.aadd_user_connection(keep_open[number])

    await asyncio.gather(*(worker(n) for n in range(10)))

    expected = set(keep_open.values())
    assert expected, "the scenario must leave someone online"
    assert len(recording) >= 2 * len(pks) - len(expected)
    await database_sync_to_async(assert_settled)(users, expected, recording, signal_log)
    # Within one process, each user's signals also arrive in the order of their seq.
    assert arrival_disorder(signal_log, pks) == 0
    print(
        f"\n{len(recording)} transitions for 480 connects and 480 disconnects; "
        f"{arrival_disorder(signal_log, pks)} signals arrived after a later one"
    )


async def test_two_connections_closing_at_the_same_moment(
    recording: list[Change], signal_log: SignalLog
) -> None:
    [user] = await database_sync_to_async(make_users)(1)

    for _ in range(50):
        first = await user_online_service.aadd_user_connection(user.pk)
        second = await user_online_service.aadd_user_connection(user.pk)
        await asyncio.gather(
            user_online_service.aremove_user_connection(user.pk, first),
            user_online_service.aremove_user_connection(user.pk, second),
        )
        assert not await user_online_service.ais_user_online(user.pk)

    offline = [c for c in recording if c.transition is Transition.OFFLINE]
    assert len(offline) == 50
    assert signal_log.kinds().count("offline") == 50
    await database_sync_to_async(assert_settled)([user], set(), recording, signal_log)


async def test_a_connect_racing_the_last_disconnect(
    recording: list[Change], signal_log: SignalLog
) -> None:
    """Whatever order they run in, the user ends online with the new connection."""
    [user] = await database_sync_to_async(make_users)(1)

    for _ in range(50):
        old = await user_online_service.aadd_user_connection(user.pk)
        new, _ = await asyncio.gather(
            user_online_service.aadd_user_connection(user.pk),
            user_online_service.aremove_user_connection(user.pk, old),
        )
        assert await user_online_service.ais_user_online(user.pk)
        await user_online_service.aremove_user_connection(user.pk, new)

    await database_sync_to_async(assert_settled)([user], set(), recording, signal_log)


@pytest.mark.parametrize("backend_name", ["redis"])
def test_threads_using_the_sync_api(recording: list[Change], signal_log: SignalLog) -> None:
    """Several threads (Celery workers, sync views) churn the same users through Redis."""
    users = make_users(3)
    pks = [u.pk for u in users]
    errors: list[BaseException] = []
    left_open: list[Any] = []
    deadline = time.monotonic() + 120

    def churn(number: int) -> None:
        rng = random.Random(number)
        try:
            for _ in range(40):
                if time.monotonic() > deadline:
                    raise TimeoutError("churn took more than 120 s")
                pk = rng.choice(pks)
                cid = user_online_service.add_user_connection(pk)
                user_online_service.remove_user_connection(pk, cid)
            if number == 0:
                user_online_service.add_user_connection(pks[0])
                left_open.append(pks[0])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)

    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert_settled(users, set(left_open), recording, signal_log)
    counts = Counter(signal_log.kinds())
    print(f"\n{counts['online']} online and {counts['offline']} offline for 160 connections")
