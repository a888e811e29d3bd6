"""Recoverable delivery with real processes: drops, a crashed server, Redis lost, the fallback.

Each test starts its own Redis and two ``uvicorn`` servers (see harness.py) and sends
notifications from this process through the same Redis, configured like the servers
(:meth:`Stack.messaging`). The clients keep their stream positions and recover on every
reconnect as presence.js does (:class:`RecoveringClient`). What is checked is what
docs/delivery.md promises: every stored message once and in order across reconnects and
servers, a ``recovery`` frame with ``recovered: false`` when Redis lost the history, one
``message_undelivered`` per message nobody acknowledged, across all servers, and a message
the channel layer dropped sent from the stream anyway.

Measured times are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from .harness import FaultDatabase, RecoveringClient, Stack, await_until

pytestmark = pytest.mark.server

#: Seconds allowed on top of a documented bound for a channel-layer hop, the servers'
#: Redis clients reconnecting, and scheduling on a loaded 2-core machine.
MARGIN = 1.5


def notifications(client: RecoveringClient) -> list[dict[str, Any]]:
    """Every ``notification`` frame the client received, over all its connections."""
    return [f for _, f in client.of_type("notification")]


def recoveries(client: RecoveringClient) -> list[dict[str, Any]]:
    """The ``user`` stream entries of every ``recovery`` frame received."""
    return [
        f["data"]["streams"]["user"]
        for _, f in client.of_type("recovery")
        if "user" in f["data"]["streams"]
    ]


# -- 1. drops, reconnects to alternating servers, one of them crashed ----------------------


async def test_thousand_notifications_arrive_once_in_order_across_drops_and_a_crash(
    make_stack: Any, fault_db: FaultDatabase
) -> None:
    stack: Stack = make_stack(ttl=3, heartbeat=1, history_size=2000)
    a, b = stack.start_server("a"), stack.start_server("b")
    user = fault_db.user_ids[0]
    total, pace = 1000, 0.006
    client = RecoveringClient(user, a.url)
    await client.reconnect(a.url)
    await await_until(lambda: recoveries(client), 10, what="the first recovery frame")

    sent_done = asyncio.Event()
    send_times: list[float] = []

    async def send_all(service: Any) -> None:
        for i in range(total):
            await service.send_notification_to_user(user, "n", str(i))
            send_times.append(time.monotonic())
            await asyncio.sleep(pace)
        sent_done.set()

    def sent() -> int:
        return len(send_times)

    reconnects: list[dict[str, Any]] = []
    t0 = time.monotonic()
    async with stack.messaging() as service:
        sender = asyncio.create_task(send_all(service))
        try:
            # Three drops while the messages flow, each followed by a reconnect to the
            # other server after a pause in which messages pile up in the stream:
            # a -> b (TCP drop), b -> a (TCP drop), a -> b (a is SIGKILLed, for good).
            plan = [(200, "abort", b), (450, "abort", a), (700, "sigkill", b)]
            for at, how, to in plan:
                await await_until(lambda at=at: sent() >= at, 30, what=f"{at} sent")
                dropped_at = sent()
                if how == "sigkill":
                    a.sigkill()
                    await asyncio.wait_for(client.closed.wait(), 10)
                else:  # drop the TCP connection; wait until the reader saw the last frame
                    await client.discard()
                pile = sent() + 40
                await await_until(lambda pile=pile: sent() >= pile, 30, what="a pile-up")
                before = len(client.frames)
                started = time.monotonic()
                await client.reconnect(to.url)
                await await_until(
                    lambda before=before: any(
                        f.get("type") == "recovery" for _, f in client.frames[before:]
                    ),
                    10,
                    what="the recovery frame after a reconnect",
                )
                entry = next(
                    f["data"]["streams"]["user"]
                    for _, f in client.frames[before:]
                    if f.get("type") == "recovery"
                )
                reconnects.append(
                    {
                        "how": how,
                        "to": to.name,
                        "dropped after": dropped_at,
                        "reconnected after": len(send_times),
                        "replayed": entry["replayed"],
                        "recovered": entry["recovered"],
                        "connect+recovery s": round(time.monotonic() - started, 3),
                    }
                )
            await asyncio.wait_for(sender, 60)
        finally:
            sender.cancel()
    sending = send_times[-1] - t0
    await await_until(
        lambda: len(notifications(client)) >= total,
        stack.heartbeat + MARGIN,
        what=f"{total} notifications received",
    )
    received = notifications(client)
    t_last = max(t for t, f in client.frames if f.get("type") == "notification")
    print(
        f"\n[1000 over drops] sent {total} in {sending:.2f} s; last received "
        f"{t_last - send_times[-1]:+.3f} s after the last send"
    )
    for line in reconnects:
        print(f"  {line}")
    print(
        f"  frames marked replayed: {sum(1 for f in received if f.get('replayed'))}, "
        f"of which after a reconnect: {sum(r['replayed'] for r in reconnects)}"
    )

    counters = [int(f["data"]["message"]) for f in received]
    duplicates = [c for c, n in Counter(counters).items() if n > 1]
    assert not duplicates, f"received more than once: {duplicates[:20]}"
    assert counters == list(range(total)), "missing or out of order"
    assert [f["offset"] for f in received] == list(range(1, total + 1))
    assert len({f["epoch"] for f in received}) == 1
    assert all(f["stream"] == "user" for f in received)
    assert [e for e in recoveries(client) if not e["recovered"]] == []
    assert len(recoveries(client)) == 4  # the first connect and three reconnects
    # Replayed frames also come from a connection's own catch-up (its beat saw a stored
    # message whose live copy was still on its way, which is then dropped as sent).
    replayed = sum(1 for f in received if f.get("replayed"))
    assert replayed >= sum(r["replayed"] for r in reconnects)
    assert all(r["replayed"] > 0 for r in reconnects), "a reconnect had nothing to replay"
    assert b.alive()
    assert not a.alive()
    await client.close()


# -- 2. Redis restarted empty --------------------------------------------------------------


async def test_redis_restarted_empty_is_told_within_a_heartbeat_then_a_new_epoch_flows(
    make_stack: Any, fault_db: FaultDatabase
) -> None:
    stack: Stack = make_stack(ttl=3, heartbeat=1)
    a, b = stack.start_server("a"), stack.start_server("b")
    users = fault_db.user_ids[1:3]
    clients = [RecoveringClient(u, s.url) for u, s in zip(users, (a, b), strict=True)]
    for c in clients:
        await c.reconnect(c.url)
    async with stack.messaging() as service:
        for c in clients:
            for i in range(3):
                await service.send_notification_to_user(c.user_id, "before", f"b{i}")
        await await_until(
            lambda: all(len(notifications(c)) == 3 for c in clients), 10, what="3 each"
        )
        old_epochs = {c.user_id: notifications(c)[-1]["epoch"] for c in clients}

        stack.redis.kill()
        await asyncio.sleep(0.5)
        stack.redis.restart_empty()
        t_up = time.monotonic()
        measured: dict[str, float] = {}

        def told() -> bool:
            for c in clients:
                lost = [
                    t - t_up
                    for t, f in c.of_type("recovery")
                    if t > t_up and f["data"]["streams"].get("user", {}).get("recovered") is False
                ]
                if lost:
                    measured.setdefault(f"user {c.user_id} told recovered:false", lost[0])
            return len(measured) == len(clients)

        await await_until(
            told, stack.heartbeat + MARGIN, what="recovered: false after the Redis restart"
        )
        print(f"\n[Redis restart] bound {stack.heartbeat:.1f} s + {MARGIN:.1f} s margin")
        for name, seconds in sorted(measured.items()):
            print(f"  {name}: {seconds:.2f} s")
        assert all(not c.closed.is_set() for c in clients), "a socket closed"

        for c in clients:
            entry = [e for e in recoveries(c) if not e["recovered"]][-1]
            assert entry["epoch"] != old_epochs[c.user_id]
            for i in range(3):
                await service.send_notification_to_user(c.user_id, "after", f"a{i}")
        await await_until(
            lambda: all(len(notifications(c)) == 6 for c in clients), 10, what="3 more each"
        )
    for c in clients:
        after = notifications(c)[3:]
        new_epoch = [e for e in recoveries(c) if not e["recovered"]][-1]["epoch"]
        assert [f["data"]["message"] for f in after] == ["a0", "a1", "a2"]
        assert [f["offset"] for f in after] == [1, 2, 3]
        assert {f["epoch"] for f in after} == {new_epoch}
        assert c.positions()["user"] == (new_epoch, 3)
    assert a.alive()
    assert b.alive()
    await asyncio.gather(*(c.close() for c in clients))


# -- 3. the undelivered fallback -----------------------------------------------------------


async def test_offline_user_gets_one_undelivered_signal_per_message_across_two_servers(
    make_stack: Any, fault_db: FaultDatabase
) -> None:
    stack: Stack = make_stack(ttl=3, heartbeat=0.5, undelivered_after=2.0)
    a, b = stack.start_server("a"), stack.start_server("b")
    offline, returning, idle_a, idle_b = fault_db.user_ids[3:7]
    # Both servers serve a connection, so both sweep for due messages every heartbeat.
    bystanders = [RecoveringClient(idle_a, a.url), RecoveringClient(idle_b, b.url)]
    for c in bystanders:
        await c.reconnect(c.url)
    # The returning user was connected before: it knows where its stream stands.
    back = RecoveringClient(returning, a.url)
    await back.reconnect(a.url)
    await await_until(lambda: recoveries(back), 10, what="the first recovery frame")
    await back.close()

    count = 5
    async with stack.messaging() as service:
        t_sent = time.monotonic()
        for i in range(count):
            await service.send_notification_to_user(offline, "for nobody", f"o{i}")
            await service.send_notification_to_user(returning, "for the returning", f"r{i}")
        # Back within the delay, on the other server: it gets the messages and acks them.
        await back.reconnect(b.url)
        await await_until(lambda: len(notifications(back)) == count, 5, what="replayed")
        last = notifications(back)[-1]
        await back.request(
            {
                "type": "ack",
                "data": {"stream": "user", "epoch": last["epoch"], "offset": last["offset"]},
            },
            "ack",
        )
        acked_after = time.monotonic() - t_sent
        assert acked_after < stack.undelivered_after, (  # type: ignore[operator]
            f"acked {acked_after:.2f} s after sending: too late for this test to mean anything"
        )

        def undelivered() -> list[dict[str, Any]]:
            return [e for e in stack.events() if e["event"] == "undelivered"]

        bound = stack.undelivered_after + stack.heartbeat  # type: ignore[operator]
        await await_until(
            lambda: len(undelivered()) >= count, bound + MARGIN, what="the offline user's"
        )
        # One more sweep of each server at least: nothing else comes.
        await asyncio.sleep(3 * stack.heartbeat)
        pending = await service.aget_pending_messages(offline, unacknowledged=True)
    events = undelivered()
    wall_sent = time.time() - (time.monotonic() - t_sent)
    delays = [e["t"] - wall_sent for e in events]
    print(
        f"\n[undelivered] {len(events)} signals, {min(delays):.2f}..{max(delays):.2f} s after "
        f"sending (bound {stack.undelivered_after:.1f}..{bound:.1f} s + {MARGIN:.1f} s); "
        f"from server pids {Counter(e['pid'] for e in events)}; ack after {acked_after:.2f} s"
    )
    assert sorted((e["user_id"], e["seq"]) for e in events) == [
        (offline, n) for n in range(1, count + 1)
    ], events
    # Documented: between UNDELIVERED_AFTER and UNDELIVERED_AFTER + HEARTBEAT_INTERVAL
    # (measured from the first send: the last one went out a few milliseconds later).
    assert min(delays) >= stack.undelivered_after - 0.05  # type: ignore[operator]
    assert max(delays) <= bound + MARGIN
    assert sorted(e["message"] for e in events) == [f"o{i}" for i in range(count)]
    assert {e["pid"] for e in events} <= {a.pid, b.pid}
    assert not [e for e in events if e["user_id"] == returning]
    assert len(pending) == count  # still pending: the fallback does not acknowledge
    assert all(s.alive() for s in (a, b))
    await asyncio.gather(back.close(), *(c.close() for c in bystanders))


# -- 4. a message the channel layer dropped ------------------------------------------------


async def test_messages_the_channel_layer_dropped_come_from_the_stream(
    make_stack: Any, fault_db: FaultDatabase
) -> None:
    """Stored but never sent (as if the layer dropped it): the servers send it anyway."""
    from django_presence import delivery, protocol

    stack: Stack = make_stack(ttl=3, heartbeat=1)
    a = stack.start_server("a")
    user = fault_db.user_ids[7]
    client = RecoveringClient(user, a.url)
    await client.reconnect(a.url)

    def stored_only(message: str) -> Any:
        event = {"type": protocol.EVENT_NOTIFICATION, "title": "x", "message": message}
        return delivery.publish(delivery.user_stream(str(user)), {**event, "extra": {}})

    async with stack.messaging() as service:
        await service.send_notification_to_user(user, "x", "m1")
        await await_until(lambda: len(notifications(client)) == 1, 10, what="m1")
        await stored_only("m2")  # the last message: the next beat finds it
        last_took = await await_until(
            lambda: len(notifications(client)) == 2, stack.heartbeat + MARGIN, what="m2"
        )
        await stored_only("m3")  # a gap: filled before the next live message
        started = time.monotonic()
        await service.send_notification_to_user(user, "x", "m4")
        await await_until(lambda: len(notifications(client)) == 4, 5, what="m3 and m4")
        gap_took = time.monotonic() - started
    print(
        f"\n[layer drop] last message sent from the stream after {last_took:.2f} s "
        f"(bound {stack.heartbeat:.1f} s + {MARGIN:.1f} s); gap filled {gap_took:.3f} s "
        "after the next send"
    )
    received = notifications(client)
    assert [f["data"]["message"] for f in received] == ["m1", "m2", "m3", "m4"]
    assert [f["offset"] for f in received] == [1, 2, 3, 4]
    await asyncio.sleep(stack.heartbeat)  # a beat later, still no duplicate
    assert len(notifications(client)) == 4
    await client.close()
