"""What only the Redis backend has: key layout, client options, outages, clients per loop."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.test import override_settings
from redis import asyncio as aioredis
from redis.crc import key_slot

from django_presence.backends.base import StreamLimits, Transition
from django_presence.backends.redis import RedisBackend
from django_presence.exceptions import BackendUnavailable
from django_presence.runtime import Runtime

from .conftest import SignalLog, presence_settings_for
from .servers import RedisProcess, free_port

LIMITS = StreamLimits(size=10, ttl=60, meta_ttl=120)


def make_backend(url: str, **options: Any) -> RedisBackend:
    return RedisBackend(url=url, key_prefix=f"t-{uuid.uuid4().hex[:8]}", **options)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(10)
    for conn in accepted:
        conn.close()
    listener.close()


async def test_every_key_carries_the_hash_tag(redis_url: str, redis_client: redis.Redis) -> None:
    backend = make_backend(redis_url)
    prefix = backend.key_prefix
    for uid in ("1", "user:with:colons", "{braces}", "ünï"):
        await backend.add_connection(uid, "a", ttl=30)
        await backend.add_connection(uid, "b", ttl=0.1)
    await backend.add_connection("3", "a", ttl=30)
    await backend.remove_connection("3", "a", grace=30)
    await asyncio.sleep(0.2)
    await backend.heartbeat_and_sweep([("2", "x")], ttl=30, lock_ttl=30)
    await backend.remove_user("ünï")
    for group in ("room", "{braces}", "g:1"):
        await backend.room_join(group, "1", "a", ttl=30)
    await backend.room_refresh([("room", "1", "a"), ("g:1", "1", "a")], ttl=30)
    for stream in ("st", "{braces}", "ü:1"):
        position = await backend.stream_publish(stream, "{}", limits=LIMITS, track=("1", 30))
        await backend.stream_ack([(stream, "1", position.epoch, 1, 0)], limits=LIMITS)
    await backend.stream_read([("new", None, None)], limits=LIMITS)

    keys = [k.decode() for k in redis_client.scan_iter(count=1000) if prefix.encode() in k]

    assert keys
    assert all(k.startswith("{" + prefix + "}:") for k in keys), keys
    assert {key_slot(k.encode()) for k in keys} == {key_slot(prefix.encode())}
    assert {k.split(":", 1)[1] for k in keys} >= {
        "leases",
        "online",
        "seq",
        "tseq",
        "closing",
        "offline",
        "room:room:c",
        "room:room:u",
        "room:room:v",
        "s:st:m",
        "s:st:l",
        "s:st:a",
        "s:new:m",
        "due",
    }
    await backend.clear()
    assert not [k for k in redis_client.scan_iter(count=1000) if prefix.encode() in k]
    await backend.aclose()


@pytest.mark.parametrize("streams", [1, 900, 2500])
async def test_stream_calls_are_one_round_trip_whatever_the_number_of_streams(
    command_counter: Any, private_redis: str, streams: int
) -> None:
    """One EVALSHA per call (per 1000 streams, pipelined in one round trip)."""
    backend = make_backend(private_redis)
    names = [f"s:{i}" for i in range(streams)]
    position = await backend.stream_publish(names[0], "{}", limits=LIMITS, track=("1", 0))
    calls = {
        "read": lambda: backend.stream_read(
            [(n, 0, position.epoch) for n in names], limits=LIMITS
        ),
        "positions": lambda: backend.stream_positions(names),
        "ack": lambda: backend.stream_ack(
            [(n, "1", position.epoch, 1, 1) for n in names], limits=LIMITS
        ),
        "cursor": lambda: backend.stream_cursor(names[0], "1"),
        "due": lambda: backend.stream_due(),
        "publish": lambda: backend.stream_publish(names[0], "{}", limits=LIMITS),
    }
    for call in calls.values():
        await call()  # loads the scripts
    chunks = -(-streams // 1000)
    expected = {"read": chunks, "positions": chunks, "ack": chunks}

    for name, call in calls.items():
        command_counter.reset()
        await call()
        assert command_counter.counts(backend.key_prefix) == {"evalsha": expected.get(name, 1)}, (
            name
        )
    await backend.clear()
    await backend.aclose()


async def test_nothing_is_left_of_users_long_offline(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """One hash field per user ever seen would grow Redis without bound."""
    backend = make_backend(redis_url, transition_retention=0.2)
    for uid in range(50):
        await backend.add_connection(str(uid), "a", ttl=30)
        await backend.add_connection(str(uid), "b", ttl=0.1)
        await backend.remove_connection(str(uid), "a")
    await asyncio.sleep(0.25)
    await backend.sweep()  # the "b" leases expire: everybody offline
    tag = "{" + backend.key_prefix + "}"
    assert redis_client.hlen(f"{tag}:tseq") == 50  # kept within the retention
    await asyncio.sleep(0.25)

    await backend.sweep()

    left = sorted(k.decode() for k in redis_client.scan_iter(match=tag.replace("{", "[{]") + "*"))
    assert left == [f"{tag}:seq"]  # the counter alone: transitions still only grow
    await backend.clear()
    await backend.aclose()


async def test_a_filing_holds_a_digest_of_each_connection_id(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A filing member is the user id and 8 bytes of digest, whatever the id's length.

    The filing holds one member per connection (the largest key of a server process): the
    user's hash keeps the 74-byte channels_redis name in full, and the sweep finds it there
    from the digest, also among many connections of the same user.
    """
    backend = make_backend(redis_url)
    dead, alive = "web-1:10#aaaaaa", "web-2:20#bbbbbb"
    names = [f"specific.{uuid.uuid4().hex}!{uuid.uuid4().hex}" for _ in range(6)]
    for cid in names[:4]:
        await backend.add_connection("42", cid, ttl=0.2, server=dead)
    for cid in names[4:]:
        await backend.add_connection("42", cid, ttl=30, server=alive)
    tag = "{" + backend.key_prefix + "}"
    members = redis_client.smembers(f"{tag}:pc:{dead}")
    assert len(members) == 4
    assert all(m.startswith(b"42") and len(m) == len(b"42") + 8 for m in members)
    await asyncio.sleep(0.3)

    result = await backend.sweep()

    assert result.removed == 4
    assert not result.changes or not any(c.changed for c in result.changes)  # still online
    left = sorted(info.connection_id for info in await backend.user_connections("42"))
    assert left == sorted(names[4:])
    await backend.clear()
    await backend.aclose()


async def test_a_record_names_its_server_by_a_short_reference(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Each connection's record has a 10-digit reference, not the server's whole name.

    Reads give the name back while the server is alive; once a dead server's filing is
    swept, its name is forgotten. A record that an earlier version wrote with the name
    itself still reads back, and is removed from that server's filing.
    """
    backend = make_backend(redis_url)
    tag = "{" + backend.key_prefix + "}"
    dead = "presence-web-7d9f8c6b5-x2k4q:12345#abcdef"  # a Kubernetes pod name
    alive = "web-2:20#bbbbbb"
    await backend.add_connection("8", "d1", ttl=0.2, server=dead)
    await backend.add_connection("8", "a1", ttl=30, server=alive)
    records = {k.decode(): v.decode() for k, v in redis_client.hgetall(f"{tag}:u:8").items()}
    assert {v.partition("|")[2] for v in records.values()} == {
        hashlib.sha1(dead.encode()).hexdigest()[:10],
        hashlib.sha1(alive.encode()).hexdigest()[:10],
    }
    servers = {i.connection_id: i.server for i in await backend.user_connections("8")}
    assert servers == {"d1": dead, "a1": alive}
    assert redis_client.hlen(f"{tag}:pname") == 2
    await asyncio.sleep(0.3)

    assert (await backend.sweep()).removed == 1
    assert {i.server for i in await backend.user_connections("8")} == {alive}
    assert redis_client.hvals(f"{tag}:pname") == [alive.encode()]

    # An earlier version's record: the server's name in full.
    redis_client.hset(f"{tag}:u:8", "a1", records["a1"].partition("|")[0] + "|" + alive)
    assert {i.server for i in await backend.user_connections("8")} == {alive}
    await backend.remove_connection("8", "a1")
    assert not await backend.is_online("8")
    assert not redis_client.exists(f"{tag}:pc:{alive}")
    # ...and one filed under a server that dies is swept like any other.
    old_server = "web-3:30#cccccc"
    await backend.add_connection("9", "e1", ttl=0.2, server=old_server)
    [opened] = [v.partition(b"|")[0] for v in redis_client.hvals(f"{tag}:u:9")]
    redis_client.hset(f"{tag}:u:9", "e1", opened + b"|" + old_server.encode())
    await asyncio.sleep(0.3)
    assert (await backend.sweep()).removed == 1
    assert not await backend.is_online("9")
    await backend.clear()
    await backend.aclose()


async def test_an_online_users_seq_is_kept_once_and_read_whichever_version_wrote_it(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """An online user has one entry (``online``: their seq), an offline one ``tseq``.

    Processes of earlier versions kept an online user's seq in ``tseq`` and the time they
    went online in ``online``: during a rolling deploy the larger of the two is the seq,
    so snapshots never go back in time whichever process made the last transition.
    """
    backend = make_backend(redis_url)
    tag = "{" + backend.key_prefix + "}"
    online = (await backend.add_connection("5", "c1", ttl=30, server="web-1:1#aaaaaa")).seq
    assert int(redis_client.hget(f"{tag}:online", "5")) == online
    assert redis_client.hget(f"{tag}:tseq", "5") is None
    assert (await backend.presence_snapshot(["5"]))["5"] == (True, online)
    assert (await backend.availability(["5"]))["5"].seq == online

    offline = (await backend.remove_connection("5", "c1")).seq
    assert offline > online
    assert redis_client.hget(f"{tag}:online", "5") is None
    assert int(redis_client.hget(f"{tag}:tseq", "5")) == offline
    assert (await backend.presence_snapshot(["5"]))["5"] == (False, offline)
    assert (await backend.availability(["5"]))["5"].seq == offline

    # What an earlier version writes for a user who went online: the time, and the seq.
    earlier = offline + 10
    redis_client.hset(f"{tag}:online", "6", "1765000000000")
    redis_client.hset(f"{tag}:tseq", "6", str(earlier))
    assert (await backend.presence_snapshot(["6"]))["6"] == (True, earlier)
    assert (await backend.availability(["6"]))["6"].seq == earlier
    # A transition here moves it on; the stale entry in tseq is not read any more.
    later = (await backend.add_connection("6", "c2", ttl=30)).seq
    assert later == 0  # already online: no transition
    await backend.set_status("6", "busy")
    snapshot = await backend.presence_snapshot(["6"])
    assert snapshot["6"][1] > earlier
    assert (await backend.availability(["6"]))["6"].seq == snapshot["6"][1]
    await backend.clear()
    await backend.aclose()


async def test_channel_names_are_stored_packed_and_read_back_whole(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A 74-byte channels_redis name is stored in 44 bytes; every read gives it back whole.

    Packed, the user's hash stays a listpack (Redis's compact encoding, for fields of at
    most 64 bytes): about 80 B less per connection. Ids that are not channel names, and
    ids that look like a packed one, are kept as they are.
    """
    from django_presence.availability import connection_data

    backend = make_backend(redis_url)
    server = "web-1:10#aaaaaa"
    channel = f"specific.{uuid.uuid4().hex}!{uuid.uuid4().hex}"
    odd = ["~", "~~x", "~" + "A" * 43, "specific.inmemory!abcdefghijkl"]
    await backend.add_connection(
        "7", channel, ttl=30, server=server, data=connection_data(device="phone")
    )
    for cid in odd:
        await backend.add_connection("7", cid, ttl=30)
    tag = "{" + backend.key_prefix + "}"

    fields = {f.decode() for f in redis_client.hkeys(f"{tag}:u:7")}
    stored_odd = {"~~", "~~~x", "~~" + "A" * 43, "specific.inmemory!abcdefghijkl"}
    assert stored_odd <= fields
    (packed,) = fields - stored_odd
    assert len(packed) == 44  # the channel name, packed
    assert packed.startswith("~")
    assert redis_client.object("encoding", f"{tag}:u:7") == b"listpack"
    infos = {info.connection_id: info for info in await backend.user_connections("7")}
    assert set(infos) == {channel, *odd}
    assert infos[channel].server == server
    found = (await backend.availability(["7"]))["7"]
    assert found.connections[channel].device == "phone"
    # The heartbeat of a lost connection stores it again and names it whole.
    redis_client.delete(f"{tag}:u:7")
    restored = await backend.heartbeat([("7", channel)], ttl=30, server=server)
    assert [cid for cid, _ in restored] == [channel]
    await backend.remove_connection("7", channel)
    assert {info.connection_id for info in await backend.user_connections("7")} == set()
    await backend.clear()
    await backend.aclose()


@pytest.mark.parametrize("prefix", ["", "a{b", "x}", 5])
def test_key_prefix_is_validated(redis_url: str, prefix: Any) -> None:
    with pytest.raises(ValueError, match="KEY_PREFIX"):
        RedisBackend(url=redis_url, key_prefix=prefix)


async def test_client_options_reach_the_pool(redis_url: str) -> None:
    backend = make_backend(
        redis_url,
        socket_timeout=1.5,
        socket_connect_timeout=0.5,
        max_connections=7,
        pool_timeout=3,
    )
    client = backend.client()
    pool = client.connection_pool

    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert pool.max_connections == 7
    assert pool.timeout == 3
    assert pool.connection_kwargs["socket_timeout"] == 1.5
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.5
    assert backend.client() is client
    await backend.aclose()


async def test_a_burst_waits_for_pooled_connections(redis_url: str) -> None:
    """With redis-py 8's default pool, more concurrent calls than connections would fail."""
    backend = make_backend(redis_url, max_connections=2)

    changes = await asyncio.gather(
        *(backend.add_connection(str(i % 5), f"c{i}", ttl=30) for i in range(200))
    )

    assert len(changes) == 200
    assert await backend.all_online_user_ids() == {str(i) for i in range(5)}
    await backend.clear()
    await backend.aclose()


async def test_client_factory(redis_url: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def factory(url: str, **options: Any) -> aioredis.Redis:
        calls.append((url, options))
        return aioredis.Redis.from_url(url, socket_timeout=options["socket_timeout"])

    backend = make_backend(redis_url, client_factory=factory)
    await backend.add_connection("1", "a", ttl=30)

    assert calls == [
        (
            redis_url,
            {
                "socket_timeout": 5.0,
                "socket_connect_timeout": 5.0,
                "max_connections": 100,
                "pool_timeout": 10.0,
            },
        )
    ]
    await backend.clear()
    await backend.aclose()


async def test_unreachable_redis_is_backend_unavailable() -> None:
    port = free_port()  # Nothing listens there.
    backend = make_backend(f"redis://:s3cret@127.0.0.1:{port}/0", socket_connect_timeout=1)

    for call in (
        lambda: backend.add_connection("1", "a", ttl=30),
        lambda: backend.is_online("1"),
        lambda: backend.online_user_ids(["1"]),
        lambda: backend.connection_count("1"),
        lambda: backend.sweep(),
        lambda: backend.clear(),
        lambda: backend.now(),
        lambda: backend.room_join("g", "1", "a", ttl=30),
        lambda: backend.room_members("g"),
        lambda: backend.room_refresh([("g", "1", "a")], ttl=30),
        lambda: backend.room_sweep(["g"]),
    ):
        with pytest.raises(BackendUnavailable) as info:
            await call()
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "s3cret" not in str(info.value)
    await backend.aclose()


def test_unreachable_redis_is_backend_unavailable_to_sync_reads() -> None:
    port = free_port()  # Nothing listens there.
    backend = make_backend(f"redis://:s3cret@127.0.0.1:{port}/0", socket_connect_timeout=1)

    for call in (
        lambda: backend.is_online_sync("1"),
        lambda: backend.online_user_ids_sync(["1"]),
        lambda: backend.connection_count_sync("1"),
        lambda: backend.all_online_user_ids_sync(),
    ):
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "s3cret" not in str(info.value)


async def test_a_hung_redis_times_out(silent_server: int) -> None:
    backend = make_backend(f"redis://127.0.0.1:{silent_server}/0", socket_timeout=0.3)

    with pytest.raises(BackendUnavailable) as info:
        await asyncio.wait_for(backend.is_online("1"), 30)

    assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
    await backend.aclose()


async def test_a_read_only_replica_is_backend_unavailable(redis_url: str) -> None:
    """What a Sentinel failover looks like to a client still talking to the old master."""
    master_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    replica = RedisProcess(extra_args=("--replicaof", "127.0.0.1", str(master_port))).start()
    try:
        backend = make_backend(replica.url)
        with pytest.raises(BackendUnavailable) as info:
            await backend.add_connection("1", "a", ttl=30)
        assert isinstance(info.value.__cause__, redis.exceptions.ReadOnlyError)
        assert await backend.is_online("1") is False  # Reads still work.
        await backend.aclose()
    finally:
        replica.stop()


async def test_a_burst_of_connects_and_closes_shares_one_redis_connection() -> None:
    """Calls made while a round trip is under way go together in the next one."""
    server = RedisProcess().start()
    try:
        backend = make_backend(server.url)
        inspector = redis.Redis.from_url(server.url)
        pairs = [(str(i // 4), f"c{i}") for i in range(400)]  # 100 users, 4 tabs each

        opened = await asyncio.gather(
            *(backend.add_connection(u, c, ttl=30, server="s") for u, c in pairs)
        )
        clients = inspector.info("clients")["connected_clients"]
        processed = inspector.info("commandstats")["cmdstat_evalsha"]["calls"]

        # One Redis connection (and this inspector's), not one per call in flight.
        assert clients == 2
        assert processed == 400
        # Each user went online once, with their first tab, whichever call ran first.
        assert sum(c.transition is Transition.ONLINE for c in opened) == 100
        assert {c.user_id for c in opened if c.transition is Transition.ONLINE} == {
            str(u) for u in range(100)
        }
        closed = await asyncio.gather(*(backend.remove_connection(u, c) for u, c in pairs))
        assert sum(c.transition is Transition.OFFLINE for c in closed) == 100
        assert await backend.all_online_user_ids() == set()
        assert inspector.info("clients")["connected_clients"] == 2
        inspector.close()
        await backend.aclose()
    finally:
        server.stop()


async def test_queued_calls_run_in_the_order_they_were_made(redis_url: str) -> None:
    backend = make_backend(redis_url)
    # Made in one turn of the loop, so queued together: the remove runs after the add.
    add = asyncio.ensure_future(backend.add_connection("1", "a", ttl=30))
    remove = asyncio.ensure_future(backend.remove_connection("1", "a"))
    again = asyncio.ensure_future(backend.add_connection("1", "b", ttl=30))
    changes = await asyncio.gather(add, remove, again)

    assert [c.transition for c in changes] == [
        Transition.ONLINE,
        Transition.OFFLINE,
        Transition.ONLINE,
    ]
    assert [c.connection_id for c in await backend.user_connections("1")] == ["b"]
    await backend.aclose()


async def test_a_cancelled_caller_does_not_cancel_the_calls_queued_with_it(
    redis_url: str,
) -> None:
    backend = make_backend(redis_url)
    first = asyncio.ensure_future(backend.add_connection("1", "a", ttl=30))
    second = asyncio.ensure_future(backend.add_connection("2", "b", ttl=30))
    await asyncio.sleep(0)  # both queued
    first.cancel()

    assert (await second).transition is Transition.ONLINE
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled call was already on its way: it ran, and a remove after it undoes it
    # (what the consumer mixin does when its connect is cancelled).
    assert await backend.is_online("1")
    await backend.remove_connection("1", "a")
    assert await backend.all_online_user_ids() == {"2"}
    await backend.aclose()


async def test_every_queued_call_fails_alike_when_redis_is_down(silent_server: int) -> None:
    backend = make_backend(f"redis://127.0.0.1:{silent_server}/0", socket_timeout=0.3)
    results = await asyncio.gather(
        *(backend.add_connection(str(i), f"c{i}", ttl=30) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, BackendUnavailable) for r in results), results
    await backend.aclose()


async def test_scripts_are_loaded_again_after_a_script_flush(private_redis: str) -> None:
    # This worker's own Redis: a flush of the suite's shared one would hit the scripts of
    # tests running in the other workers between their load and their call.
    backend = make_backend(private_redis)
    redis_client = redis.Redis.from_url(private_redis)
    await backend.add_connection("1", "a", ttl=30)
    redis_client.script_flush()  # What a restarted Redis looks like to a cached sha.

    change = await backend.add_connection("1", "b", ttl=30)

    assert change.connection_count == 2
    # The pipelined room scripts too (a refresh, then a sweep, over two groups).
    for group in ("g1", "g2"):
        await backend.room_join(group, "1", "a", ttl=0.3)
    await backend.room_refresh([("g1", "1", "a"), ("g2", "1", "a")], ttl=0.3)
    await backend.room_sweep(["g1", "g2"])
    redis_client.script_flush()
    await backend.room_refresh([("g1", "1", "a")], ttl=30)
    redis_client.script_flush()
    await asyncio.sleep(0.4)
    changes = await backend.room_sweep(["g1", "g2"])
    assert [(c.group, c.user_id, c.changed) for c in changes] == [("g2", "1", True)]
    await backend.clear()
    await backend.aclose()
    redis_client.close()


def test_sync_callers_do_not_leak_clients(private_redis: str) -> None:
    """Each async_to_sync call runs a new loop: its client is closed with that loop."""
    backend = make_backend(private_redis)
    probe = redis.Redis.from_url(private_redis)

    def clients() -> int:
        return int(probe.info("clients")["connected_clients"])

    before = clients()
    for i in range(30):
        async_to_sync(backend.add_connection)(str(i), "a", ttl=30)
        assert async_to_sync(backend.is_online)(str(i))
    gc.collect()  # An unclosed socket would warn here, and warnings are errors.

    assert clients() == before
    async_to_sync(backend.clear)()
    probe.close()


def test_one_client_per_loop_from_threads(private_redis: str) -> None:
    backend = make_backend(private_redis)
    seen: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        async def run() -> None:
            first = backend.client()
            await backend.add_connection("1", uuid.uuid4().hex, ttl=30)
            assert backend.client() is first
            seen.append(id(first))

        try:
            asyncio.run(run())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(seen) == 4
    assert async_to_sync(backend.connection_count)("1") == 4
    gc.collect()
    async_to_sync(backend.clear)()


@pytest.mark.django_db(transaction=True)
async def test_heartbeat_registers_connections_once_redis_is_back(
    signal_log: SignalLog, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is down when the user connects; the heartbeat keeps trying and registers them."""
    server = RedisProcess()  # Not started yet: nothing listens on its port.
    settings_dict = presence_settings_for(
        "redis",
        server.url,
        HEARTBEAT_INTERVAL=0.2,
        CONNECTION_TTL=1,
        SYNC_USER_MODEL=False,
        BACKEND_OPTIONS={"socket_connect_timeout": 0.5},
    )
    heartbeat = Runtime()
    try:
        with override_settings(DJANGO_PRESENCE=settings_dict):
            from django_presence.backends import get_backend

            heartbeat.track_connection("42", "conn")
            with caplog.at_level(logging.ERROR, "django_presence.runtime"):

                async def failed_beats() -> bool:
                    return "Presence heartbeat failed" in caplog.text

                await _until(failed_beats)
            server.start()

            async def registered() -> bool:
                try:
                    return await get_backend().is_online("42")
                except BackendUnavailable:
                    return False

            await _until(registered)

            # The signal follows the backend's step, after the DB write (slower on
            # PostgreSQL): wait for it, then make sure it came once.
            async def announced() -> bool:
                return bool(signal_log.kinds())

            await _until(announced)
            assert signal_log.kinds() == ["online"]
            await get_backend().aclose()
    finally:
        await heartbeat.stop()
        server.stop()


async def _until(condition: Any, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"Not within {timeout} s: {condition.__name__}")
        await asyncio.sleep(0.05)


def test_sync_reads_share_one_pool_across_threads(private_redis: str) -> None:
    """A view calling is_user_online() must not open a Redis connection per call."""
    backend = make_backend(private_redis)
    async_to_sync(backend.add_connection)("1", "a", ttl=30)
    probe = redis.Redis.from_url(private_redis)

    def opened() -> int:
        return int(probe.info("stats")["total_connections_received"])

    before = opened()
    results: list[tuple[bool, bool, int, set[str]]] = []

    def worker() -> None:
        for _ in range(50):
            results.append(
                (
                    backend.is_online_sync("1"),
                    backend.is_online_sync("2"),
                    backend.connection_count_sync("1"),
                    backend.online_user_ids_sync(["1", "2"]),
                )
            )

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert results == [(True, False, 1, {"1"})] * 200
    assert opened() - before <= 4  # at most one pooled connection per thread, then reused
    async_to_sync(backend.clear)()
    probe.close()


def test_sync_client_factory(redis_url: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def sync_factory(url: str, **options: Any) -> redis.Redis:
        calls.append((url, options))
        return redis.Redis.from_url(url, socket_timeout=options["socket_timeout"])

    def async_factory(url: str, **options: Any) -> aioredis.Redis:
        return aioredis.Redis.from_url(url, socket_timeout=options["socket_timeout"])

    backend = make_backend(
        redis_url, client_factory=async_factory, sync_client_factory=sync_factory
    )
    async_to_sync(backend.add_connection)("1", "a", ttl=30)

    assert backend.is_online_sync("1") is True
    assert backend.all_online_user_ids_sync() == {"1"}
    assert [url for url, _ in calls] == [redis_url]  # built once, then shared
    assert calls[0][1]["socket_timeout"] == 5.0
    async_to_sync(backend.clear)()
    backend.sync_client().close()


def test_async_client_factory_alone_still_serves_sync_reads(redis_url: str) -> None:
    """With only a client_factory (Sentinel, Cluster), sync reads go through it."""
    made: list[str] = []

    def async_factory(url: str, **options: Any) -> aioredis.Redis:
        made.append(url)
        return aioredis.Redis.from_url(url, socket_timeout=options["socket_timeout"])

    backend = make_backend(redis_url, client_factory=async_factory)
    async_to_sync(backend.add_connection)("1", "a", ttl=30)

    assert backend.sync_client() is None
    assert backend.is_online_sync("1") is True
    assert backend.connection_count_sync("1") == 1
    assert backend.online_user_ids_sync(["1", "2"]) == {"1"}
    assert backend.all_online_user_ids_sync() == {"1"}
    assert len(made) >= 2  # the async factory served the sync reads too
    async_to_sync(backend.clear)()
