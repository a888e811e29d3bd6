"""``user_online_service``: the public API, its side effects and their cost, on both backends."""

from __future__ import annotations

import threading
import time
from typing import Any

import django
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_presence import groups
from django_presence.backends import get_backend
from django_presence.services import user_online_service

from .conftest import SignalLog

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


def make_user(name: str = "alice") -> Any:
    return User.objects.create_user(username=name)


def updates(context: CaptureQueriesContext) -> list[str]:
    """The UPDATE statements run while ``context`` was open."""
    return [q["sql"] for q in context.captured_queries if q["sql"].startswith("UPDATE")]


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"Condition not met within {timeout} s")
        time.sleep(0.02)


# -- sync API --------------------------------------------------------------------------------


def test_first_connection_comes_online_second_tab_writes_nothing(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()

    with CaptureQueriesContext(connection) as first_queries:
        first = user_online_service.add_user_connection(user.pk)
    with CaptureQueriesContext(connection) as second_queries:
        second = user_online_service.add_user_connection(user.pk, "tab-2")

    assert isinstance(first, str)
    assert len(first) == 32
    assert second == "tab-2"
    assert len(updates(first_queries)) == 1
    assert second_queries.captured_queries == []
    user.refresh_from_db()
    assert user.is_online
    assert user.last_seen is None
    assert user_online_service.is_user_online(user.pk)
    assert user_online_service.get_user_connection_count(user.pk) == 2
    assert signal_log.kinds() == ["online"]


def test_last_connection_closing_goes_offline_with_one_write(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()
    first = user_online_service.add_user_connection(user.pk)
    second = user_online_service.add_user_connection(user.pk)

    with CaptureQueriesContext(connection) as non_last:
        user_online_service.remove_user_connection(user.pk, first)
    with CaptureQueriesContext(connection) as last:
        user_online_service.remove_user_connection(user.pk, second)

    assert non_last.captured_queries == []
    assert len(updates(last)) == 1
    user.refresh_from_db()
    assert not user.is_online
    assert user.last_seen is not None
    assert not user_online_service.is_user_online(user.pk)
    assert user_online_service.get_user_connection_count(user.pk) == 0
    assert signal_log.kinds() == ["online", "offline"]


def test_a_heartbeat_writes_nothing(presence: dict[str, Any], signal_log: SignalLog) -> None:
    user = make_user()
    cid = user_online_service.add_user_connection(user.pk)

    with CaptureQueriesContext(connection) as queries:
        async_to_sync(user_online_service.aheartbeat)([(user.pk, cid)])

    assert queries.captured_queries == []
    assert signal_log.kinds() == ["online"]


def test_a_heartbeat_after_the_backend_lost_everything_writes_again(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()
    cid = user_online_service.add_user_connection(user.pk)
    async_to_sync(get_backend().clear)()

    with CaptureQueriesContext(connection) as queries:
        async_to_sync(user_online_service.aheartbeat)([(user.pk, cid)])

    # The user was marked online in the DB already: the conditional UPDATE matches no row,
    # but the signal fires, as the backend decided a transition.
    assert len(updates(queries)) == 1
    assert user_online_service.is_user_online(user.pk)
    assert signal_log.kinds() == ["online", "online"]


def test_grace_period_keeps_the_user_online_then_sweep_takes_them_offline(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()
    cid = user_online_service.add_user_connection(user.pk)

    with CaptureQueriesContext(connection) as queries:
        user_online_service.remove_user_connection(user.pk, cid, grace=0.3)

    assert queries.captured_queries == []
    assert user_online_service.is_user_online(user.pk)
    assert user_online_service.get_user_connection_count(user.pk) == 0
    user.refresh_from_db()
    assert user.is_online

    swept = []
    wait_until(lambda: swept.append(user_online_service.sweep()) or swept[-1] > 0)

    assert swept[-1] == 1
    assert not user_online_service.is_user_online(user.pk)
    user.refresh_from_db()
    assert not user.is_online
    assert user.last_seen is not None
    assert signal_log.kinds() == ["online", "offline"]


def test_reconnect_within_the_default_grace_period_is_invisible(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()
    with override_settings(DJANGO_PRESENCE={**presence, "OFFLINE_GRACE_PERIOD": 30}):
        cid = user_online_service.add_user_connection(user.pk)
        with CaptureQueriesContext(connection) as queries:
            user_online_service.remove_user_connection(user.pk, cid)  # A page reload...
            user_online_service.add_user_connection(user.pk)  # ...and its new socket.

        assert queries.captured_queries == []
        assert user_online_service.sweep() == 0
        assert signal_log.kinds() == ["online"]
        assert user_online_service.get_user_connection_count(user.pk) == 1


def test_cleanup_user_connections(presence: dict[str, Any], signal_log: SignalLog) -> None:
    user = make_user()
    for _ in range(3):
        user_online_service.add_user_connection(user.pk)

    with CaptureQueriesContext(connection) as queries:
        removed = user_online_service.cleanup_user_connections(user.pk)

    assert removed == 3
    assert len(updates(queries)) == 1
    assert not user_online_service.is_user_online(user.pk)
    user.refresh_from_db()
    assert not user.is_online
    assert signal_log.kinds() == ["online", "offline"]
    assert user_online_service.cleanup_user_connections(user.pk) == 0
    assert signal_log.kinds() == ["online", "offline"]


def test_get_online_user_ids_returns_the_ids_as_given(presence: dict[str, Any]) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    user_online_service.add_user_connection(alice.pk)
    user_online_service.add_user_connection(str(bob.pk))

    assert user_online_service.get_online_user_ids([alice.pk, bob.pk, carol.pk]) == {
        alice.pk,
        bob.pk,
    }
    assert user_online_service.get_online_user_ids([str(alice.pk), carol.pk]) == {str(alice.pk)}
    assert user_online_service.get_online_user_ids(iter([bob.pk])) == {bob.pk}
    assert user_online_service.get_online_user_ids([]) == set()


def test_sweep_returns_how_many_connections_it_removed(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()
    # Changing settings builds a new backend: the whole test runs with the short TTL.
    with override_settings(DJANGO_PRESENCE={**presence, "CONNECTION_TTL": 0.3}):
        user_online_service.add_user_connection(user.pk)
        user_online_service.add_user_connection(user.pk)
        removed: list[int] = []
        wait_until(lambda: removed.append(user_online_service.sweep()) or sum(removed) == 2)

    assert not user_online_service.is_user_online(user.pk)
    user.refresh_from_db()
    assert not user.is_online
    assert signal_log.kinds() == ["online", "offline"]


def test_signals_carry_the_primary_key_and_increasing_seq(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()
    cid = user_online_service.add_user_connection(str(user.pk))  # Given as a string.
    user_online_service.remove_user_connection(str(user.pk), cid)

    [(online, online_pk, online_seq), (offline, offline_pk, offline_seq)] = signal_log.events
    assert (online, offline) == ("online", "offline")
    assert online_pk == offline_pk == user.pk
    assert type(online_pk) is int
    assert 0 < online_seq < offline_seq


def test_sync_api_from_a_plain_thread(presence: dict[str, Any], signal_log: SignalLog) -> None:
    """Celery workers and other threads have no event loop; the sync API works there."""
    user = make_user()
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            cid = user_online_service.add_user_connection(user.pk)
            results["online"] = user_online_service.is_user_online(user.pk)
            results["count"] = user_online_service.get_user_connection_count(user.pk)
            results["ids"] = user_online_service.get_online_user_ids([user.pk])
            user_online_service.remove_user_connection(user.pk, cid)
            results["after"] = user_online_service.is_user_online(user.pk)
            results["cleanup"] = user_online_service.cleanup_user_connections(user.pk)
            results["swept"] = user_online_service.sweep()
        except BaseException as e:
            errors.append(e)
        finally:
            # As Celery and Django's request handling do at the end of a unit of work.
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)

    assert not thread.is_alive()
    assert errors == []
    assert results == {
        "online": True,
        "count": 1,
        "ids": {user.pk},
        "after": False,
        "cleanup": 0,
        "swept": 0,
    }
    user.refresh_from_db()
    assert not user.is_online
    assert signal_log.kinds() == ["online", "offline"]


@pytest.mark.parametrize("bad", [None, True, 1.5, b"1", object(), [1], {"id": 1}])
def test_bad_user_id_is_a_type_error(presence: dict[str, Any], bad: Any) -> None:
    for call in (
        lambda: user_online_service.add_user_connection(bad),
        lambda: user_online_service.remove_user_connection(bad, "c"),
        lambda: user_online_service.is_user_online(bad),
        lambda: user_online_service.get_user_connection_count(bad),
        lambda: user_online_service.cleanup_user_connections(bad),
        lambda: user_online_service.get_online_user_ids([1, bad]),
    ):
        with pytest.raises(TypeError, match="user_id must be a user's primary key") as info:
            call()
        assert type(bad).__name__ in str(info.value)


@pytest.mark.parametrize("bad", [None, 5, b"c", ""])
def test_bad_connection_id_is_a_type_error(presence: dict[str, Any], bad: Any) -> None:
    calls = [lambda: user_online_service.remove_user_connection(1, bad)]
    if bad is not None:  # None asks for a generated id.
        calls.append(lambda: user_online_service.add_user_connection(1, bad))
    for call in calls:
        with pytest.raises(TypeError, match="connection_id must be a non-empty str"):
            call()
    assert not user_online_service.is_user_online(1)


def test_sync_user_model_off_writes_nothing(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    user = make_user()
    with (
        override_settings(DJANGO_PRESENCE={**presence, "SYNC_USER_MODEL": False}),
        CaptureQueriesContext(connection) as queries,
    ):
        cid = user_online_service.add_user_connection(user.pk)
        user_online_service.remove_user_connection(user.pk, cid)
        user_online_service.add_user_connection(user.pk)
        user_online_service.cleanup_user_connections(user.pk)

    assert queries.captured_queries == []
    user.refresh_from_db()
    assert not user.is_online
    assert user.last_seen is None
    # Signals are still sent: they follow the backend, not the DB.
    assert signal_log.kinds() == ["online", "offline", "online", "offline"]


def test_a_failing_signal_receiver_does_not_stop_the_others(
    presence: dict[str, Any], signal_log: SignalLog, caplog: pytest.LogCaptureFixture
) -> None:
    from django_presence.signals import user_online

    later: list[Any] = []

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    def connected_after_it(user_id: Any, **kwargs: Any) -> None:
        later.append(user_id)

    user = make_user()
    user_online.connect(broken, weak=False)
    user_online.connect(connected_after_it, weak=False)
    try:
        user_online_service.add_user_connection(user.pk)
    finally:
        user_online.disconnect(broken)
        user_online.disconnect(connected_after_it)

    user.refresh_from_db()
    assert user.is_online
    assert user_online_service.is_user_online(user.pk)
    assert signal_log.kinds() == ["online"]  # connected before the broken one
    assert later == [user.pk]  # and after it
    errors = [r for r in caplog.records if r.name == "django_presence.transitions"]
    assert [r.getMessage() for r in errors] == [
        f"The user_online receiver {__name__}.{broken.__qualname__} failed for user {user.pk}"
    ]
    assert errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "receiver bug"


# -- async API -------------------------------------------------------------------------------


async def test_async_api(presence: dict[str, Any], signal_log: SignalLog) -> None:
    from channels.db import database_sync_to_async

    user = await database_sync_to_async(make_user)()
    service = user_online_service

    first = await service.aadd_user_connection(user.pk)
    second = await service.aadd_user_connection(user.pk, "given-id")
    assert second == "given-id"
    assert await service.ais_user_online(user.pk)
    assert await service.aget_user_connection_count(user.pk) == 2
    assert await service.aget_online_user_ids([user.pk, user.pk + 1]) == {user.pk}
    await service.aremove_user_connection(user.pk, first)
    assert await service.aget_user_connection_count(user.pk) == 1
    await service.aremove_user_connection(user.pk, second, grace=30)
    assert await service.ais_user_online(user.pk)
    assert await service.asweep() == 0
    assert await service.acleanup_user_connections(user.pk) == 1
    assert not await service.ais_user_online(user.pk)

    await database_sync_to_async(user.refresh_from_db)()
    assert not user.is_online
    assert user.last_seen is not None
    assert signal_log.kinds() == ["online", "offline"]


@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="async signal receivers need Django 5.0 (Signal.asend)"
)
async def test_an_async_receiver_may_change_the_same_users_presence(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    """A user_online receiver that logs the user out again must not wait forever."""
    import asyncio

    from django_presence.signals import user_online

    async def kick(sender: Any, user_id: Any, **kwargs: Any) -> None:
        await user_online_service.acleanup_user_connections(user_id)

    user_online.connect(kick, weak=False)
    try:
        await asyncio.wait_for(user_online_service.aadd_user_connection(5), 30)
    finally:
        user_online.disconnect(kick)

    assert not await user_online_service.ais_user_online(5)
    assert signal_log.of(5) == ["online", "offline"]


@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="async signal receivers need Django 5.0 (Signal.asend)"
)
async def test_a_sole_async_receiver_is_awaited_and_may_change_the_same_users_presence(
    presence: dict[str, Any],
) -> None:
    """The one-async-receiver path: awaited before the caller returns, robust, re-entrant."""
    import asyncio

    from django_presence.signals import user_offline, user_online

    heard: list[tuple[str, Any]] = []

    async def kick(sender: Any, user_id: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.05)  # the caller waits for a receiver that takes its time
        heard.append(("online", user_id))
        await user_online_service.acleanup_user_connections(user_id)

    async def note_offline(sender: Any, user_id: Any, **kwargs: Any) -> None:
        heard.append(("offline", user_id))

    user_online.connect(kick, weak=False)
    user_offline.connect(note_offline, weak=False)
    try:
        await asyncio.wait_for(user_online_service.aadd_user_connection(6), 30)
        assert heard == [("online", 6), ("offline", 6)]
    finally:
        user_online.disconnect(kick)
        user_offline.disconnect(note_offline)
    assert not await user_online_service.ais_user_online(6)


@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="async signal receivers need Django 5.0 (Signal.asend)"
)
async def test_a_sole_async_receiver_that_raises_is_logged(
    presence: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from django_presence.signals import user_online

    async def broken(**kwargs: Any) -> None:
        raise RuntimeError("async receiver bug")

    user_online.connect(broken, weak=False)
    try:
        await user_online_service.aadd_user_connection(7)
    finally:
        user_online.disconnect(broken)

    assert await user_online_service.ais_user_online(7)
    errors = [r for r in caplog.records if r.name == "django_presence.transitions"]
    assert [r.getMessage() for r in errors] == [
        f"The user_online receiver {__name__}.{broken.__qualname__} failed for user 7"
    ]
    assert str(errors[0].exc_info[1]) == "async receiver bug"


@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="async signal receivers need Django 5.0 (Signal.asend)"
)
async def test_receivers_of_different_users_in_one_batch_run_concurrently(
    presence: dict[str, Any],
) -> None:
    """A batch waits for its slowest receiver, not for the sum of its receivers."""
    import asyncio

    from django_presence.signals import user_online

    started: set[Any] = set()
    finished: set[Any] = set()
    both = asyncio.Event()

    async def waits_for_the_other(sender: Any, user_id: Any, **kwargs: Any) -> None:
        started.add(user_id)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # one after the other, this times out
        finished.add(user_id)

    user_online.connect(waits_for_the_other, weak=False)
    try:
        # A window, so that both transitions are applied as one batch.
        with override_settings(DJANGO_PRESENCE={**presence, "TRANSITION_BATCH_WINDOW": 0.2}):
            await asyncio.gather(
                user_online_service.aadd_user_connection(8),
                user_online_service.aadd_user_connection(9),
            )
    finally:
        user_online.disconnect(waits_for_the_other)
    assert finished == {8, 9}


@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="async signal receivers need Django 5.0 (Signal.asend)"
)
def test_signals_go_concurrently_only_when_every_receiver_is_async() -> None:
    """Sync receivers share Django's one thread: sending them at once only adds contention."""
    from django.dispatch import Signal

    from django_presence.signals import receiver_kind

    signal = Signal()
    assert receiver_kind(signal, None) == "none"

    async def async_receiver(**kwargs: Any) -> None:
        pass

    def sync_receiver(**kwargs: Any) -> None:
        pass

    signal.connect(async_receiver, weak=False)
    assert receiver_kind(signal, None) == "async"
    signal.connect(sync_receiver, weak=False)
    assert receiver_kind(signal, None) == "sync"


async def test_a_users_sends_stay_in_order_while_other_users_run_beside_them() -> None:
    import asyncio

    from django_presence.transitions import _in_user_order

    log: list[str] = []

    async def send(item: tuple[str, int]) -> None:
        user, n = item
        log.append(f"start {user}{n}")
        await asyncio.sleep(0.05 if (user, n) == ("a", 1) else 0)
        log.append(f"end {user}{n}")

    await _in_user_order([("a", 1), ("b", 1), ("a", 2), ("c", 1)], lambda i: i[0], send)
    # a1, b1 and c1 together; a2 only once a1 ended.
    assert log[:3] == ["start a1", "start b1", "start c1"]
    assert log.index("end a1") < log.index("start a2")
    assert log[-2:] == ["start a2", "end a2"]


def test_a_sync_receiver_may_change_the_same_users_presence(
    presence: dict[str, Any], signal_log: SignalLog
) -> None:
    from django_presence.signals import user_online

    def kick(sender: Any, user_id: Any, **kwargs: Any) -> None:
        user_online_service.cleanup_user_connections(user_id)

    user = make_user()
    user_online.connect(kick, weak=False)

    def worker() -> None:
        try:
            user_online_service.add_user_connection(user.pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker, daemon=True)
    try:
        thread.start()
        thread.join(30)
    finally:
        user_online.disconnect(kick)

    assert not thread.is_alive(), "the receiver waited for a lock its caller held"
    assert not user_online_service.is_user_online(user.pk)
    user.refresh_from_db()
    assert not user.is_online
    assert signal_log.of(user.pk) == ["online", "offline"]


async def test_sync_api_inside_an_event_loop_is_refused(presence: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match=r"await user_online_service\.ais_user_online"):
        user_online_service.is_user_online(1)
    with pytest.raises(RuntimeError, match=r"await user_online_service\.aget_online_user_ids"):
        user_online_service.get_online_user_ids([1])
    with pytest.raises(RuntimeError, match="aget_user_connection_count"):
        user_online_service.get_user_connection_count(1)
    with pytest.raises(RuntimeError, match="async"):
        user_online_service.add_user_connection(1)


async def test_watchers_are_told_of_transitions(presence: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    await layer.group_add(groups.watchers_group(7), channel)

    cid = await user_online_service.aadd_user_connection(7)
    await user_online_service.aadd_user_connection(7)  # A second tab: nobody is told.
    await user_online_service.acleanup_user_connections(7)
    del cid

    online = await layer.receive(channel)
    offline = await layer.receive(channel)
    assert online == {
        "type": "presence.status",
        "user_id": 7,
        "is_online": True,
        "last_seen": None,
        "seq": online["seq"],
        "state": "online",
        "devices": [],
        "activities": [],
        "status_text": "",
    }
    assert offline["is_online"] is False
    assert offline["state"] == "offline"
    assert offline["last_seen"] is not None
    assert offline["seq"] > online["seq"] > 0
    await layer.group_discard(groups.watchers_group(7), channel)


# -- cost ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sync_user_model", [True, False])
async def test_redis_round_trips_per_connect_and_disconnect(
    command_counter: Any, private_redis: str, sync_user_model: bool
) -> None:
    """One script per call; a transition written to the DB adds one read to verify it."""
    from .conftest import presence_settings_for

    settings_dict = presence_settings_for("redis", private_redis, SYNC_USER_MODEL=sync_user_model)
    service = user_online_service
    with override_settings(DJANGO_PRESENCE=settings_dict):
        warm_up = await service.aadd_user_connection(1)  # Connects, loads the scripts.
        await service.aremove_user_connection(1, warm_up)
        measured = {}
        for step, call in [
            ("first connect", lambda: service.aadd_user_connection(1, "a")),
            ("second tab", lambda: service.aadd_user_connection(1, "b")),
            ("close non-last", lambda: service.aremove_user_connection(1, "b")),
            ("close last", lambda: service.aremove_user_connection(1, "a")),
        ]:
            command_counter.reset()
            await call()
            measured[step] = command_counter.counts(settings_dict["KEY_PREFIX"])
        await get_backend().aclose()
    print(f"\nSYNC_USER_MODEL={sync_user_model}: {measured}")

    transition = {"evalsha": 1, "hmget": 1} if sync_user_model else {"evalsha": 1}
    assert measured == {
        "first connect": transition,
        "second tab": {"evalsha": 1},
        "close non-last": {"evalsha": 1},
        "close last": transition,
    }


def test_a_sync_call_opens_one_connection(command_counter: Any, private_redis: str) -> None:
    """The sync forms run a new event loop per call, hence a new Redis connection (HELLO)."""
    from .conftest import presence_settings_for

    settings_dict = presence_settings_for("redis", private_redis, SYNC_USER_MODEL=False)
    with override_settings(DJANGO_PRESENCE=settings_dict):
        user_online_service.add_user_connection(1, "warm-up")
        command_counter.reset()
        user_online_service.add_user_connection(1, "a")
        user_online_service.is_user_online(1)

    assert command_counter.counts() == {"hello": 2, "evalsha": 1, "hexists": 1}
