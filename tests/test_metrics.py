"""Counters, METRICS_HOOK and structured logs, seen through real consumers and heartbeats.

Sockets go through ``WebsocketCommunicator`` and the real ``ws/user/`` consumer, on both
backends; what is asserted is what an operator would see on a dashboard or in JSON logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence import metrics
from django_presence.backends import get_backend
from django_presence.ids import SERVER_ID
from django_presence.protocol import CLOSE_FLOODING
from django_presence.runtime import Runtime, get_runtime
from django_presence.services import user_online_service

from .conftest import presence_settings_for
from .test_user_consumer import (
    TIMEOUT,
    assert_usable,
    open_socket,
    receive,
    receive_type,
    request,
)

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


class HookLog:
    """A METRICS_HOOK that records its calls (thread-safe), as an exporter would."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, int, dict[str, str]]] = []

    def __call__(self, name: str, value: int, labels: dict[str, str]) -> None:
        with self.lock:
            self.calls.append((name, value, labels))

    def total(self, name: str, **labels: str) -> int:
        with self.lock:
            return sum(v for n, v, lb in self.calls if n == name and lb == labels)


#: Set by ``hooked``; what the dotted-path form of the setting points at.
RECORDED = HookLog()


def recording_hook(name: str, value: int, labels: dict[str, str]) -> None:
    """A hook given to METRICS_HOOK by dotted path."""
    RECORDED(name, value, labels)


@pytest.fixture(autouse=True)
def _zero() -> Iterator[None]:
    metrics.reset()
    yield
    metrics.reset()


@pytest.fixture
def hook(presence: dict[str, Any]) -> Iterator[HookLog]:
    """METRICS_HOOK set to a recorder for the whole test."""
    log = HookLog()
    with override_settings(DJANGO_PRESENCE={**presence, "METRICS_HOOK": log}):
        yield log


@pytest.fixture
async def alice(presence: dict[str, Any]) -> Any:
    return await User.objects.acreate(username="alice")


def count(name: str) -> int:
    return metrics.snapshot()[name]


# -- the module itself ------------------------------------------------------------------------


def test_snapshot_lists_every_counter_at_zero_and_is_json() -> None:
    snap = metrics.snapshot()
    assert snap["connections_opened"] == 0
    assert snap['transitions{transition="online"}'] == 0
    assert snap['frames_rejected{reason="rate_limited"}'] == 0
    assert set(snap.values()) == {0}
    assert json.loads(json.dumps(snap)) == snap
    assert next(s.name for s in metrics.samples()) == "connections_opened"


def test_increment_adds_and_labels_appear_when_used() -> None:
    metrics.increment("connections_swept", 3)
    metrics.increment("connections_swept")
    metrics.increment("frames_rejected", reason='my "code"')
    snap = metrics.snapshot()
    assert snap["connections_swept"] == 4
    assert snap['frames_rejected{reason="my \\"code\\""}'] == 1
    assert metrics.Sample("frames_rejected", {"reason": 'my "code"'}, 1) in metrics.samples()


@pytest.mark.parametrize(
    ("args", "labels", "message"),
    [
        (("no_such_counter",), {}, "Unknown presence counter 'no_such_counter'"),
        (("sweeps",), {"reason": "x"}, "takes no labels"),
        (("frames_rejected",), {}, "takes exactly the label 'reason'"),
        (("frames_rejected",), {"code": "x"}, "takes exactly the label 'reason'"),
        (("sweeps", -1), {}, "non-negative int"),
        (("sweeps", 1.5), {}, "non-negative int"),
        (("sweeps", True), {}, "non-negative int"),
    ],
)
def test_bad_increments_are_clear_errors(
    args: tuple[Any, ...], labels: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        metrics.increment(*args, **labels)


def test_unconfigured_increment_is_cheap() -> None:
    # Not a benchmark: a generous bound that only a slow path (importing, reading
    # settings, logging) on every call would break.
    metrics.increment("sweeps")  # resolves the (absent) hook once
    start = time.perf_counter()
    for _ in range(10_000):
        metrics.increment("sweeps")
    assert (time.perf_counter() - start) / 10_000 < 50e-6
    assert count("sweeps") == 10_001


def test_hook_by_dotted_path_and_settings_changes_are_followed(
    presence: dict[str, Any],
) -> None:
    RECORDED.calls.clear()
    path = "tests.test_metrics.recording_hook"
    with override_settings(DJANGO_PRESENCE={**presence, "METRICS_HOOK": path}):
        metrics.increment("frames_rejected", reason="forbidden")
    metrics.increment("sweeps")  # the hook is unset again
    assert RECORDED.calls == [("frames_rejected", 1, {"reason": "forbidden"})]


def test_an_unusable_hook_is_logged_and_counting_goes_on(
    presence: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with override_settings(DJANGO_PRESENCE={**presence, "METRICS_HOOK": "no.such.hook"}):
        metrics.increment("sweeps")
        metrics.increment("sweeps")
    assert count("sweeps") == 2
    errors = [r for r in caplog.records if r.name == "django_presence.metrics"]
    assert len(errors) == 1
    assert "'no.such.hook' could not be imported" in errors[0].getMessage()


# -- connections ------------------------------------------------------------------------------


async def test_connections_opened_and_closed(
    alice: Any, hook: HookLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="django_presence")
    tabs = [await open_socket(alice), await open_socket(alice)]
    assert (count("connections_opened"), count("connections_closed")) == (2, 0)
    await tabs[0].disconnect()
    assert (count("connections_opened"), count("connections_closed")) == (2, 1)
    await tabs[1].disconnect()
    assert count("connections_closed") == 2
    assert (hook.total("connections_opened"), hook.total("connections_closed")) == (2, 2)

    records = [r for r in caplog.records if r.name == "django_presence.consumers.mixins"]
    opened = [r for r in records if r.getMessage().startswith("Opened connection")]
    closed = [r for r in records if r.getMessage().startswith("Closed connection")]
    assert len(opened) == len(closed) == 2
    for record in opened + closed:
        assert record.levelno == logging.DEBUG
        assert record.__dict__["user_id"] == alice.pk
        assert record.__dict__["server"] == SERVER_ID
        assert isinstance(record.__dict__["connection_id"], str)
        assert record.__dict__["connection_id"]
    assert {r.__dict__["connection_id"] for r in opened} == {
        r.__dict__["connection_id"] for r in closed
    }
    assert len({r.__dict__["connection_id"] for r in opened}) == 2


async def test_transitions_online_and_offline(alice: Any, hook: HookLog) -> None:
    tab = await open_socket(alice)
    second = await open_socket(alice)  # no transition
    assert metrics.snapshot()['transitions{transition="online"}'] == 1
    await tab.disconnect()
    await second.disconnect()  # OFFLINE_GRACE_PERIOD is 0 in the test settings
    snap = metrics.snapshot()
    assert snap['transitions{transition="online"}'] == 1
    assert snap['transitions{transition="offline"}'] == 1
    assert hook.total("transitions", transition="offline") == 1


# -- rejected frames --------------------------------------------------------------------------


async def test_a_rate_limited_frame_increments_rate_limited(
    alice: Any, presence: dict[str, Any], hook: HookLog
) -> None:
    limits = {"RATE_LIMIT_RATE": 0.01, "RATE_LIMIT_BURST": 2, "FLOOD_CLOSE_AFTER": None}
    with override_settings(DJANGO_PRESENCE={**presence, **limits, "METRICS_HOOK": hook}):
        tab = await open_socket(alice)
        for _ in range(3):
            await request(tab, "ping")
        codes = [(await receive(tab))["type"] for _ in range(3)]
        assert codes == ["pong", "pong", "error"]
        await tab.disconnect()
    assert count('frames_rejected{reason="rate_limited"}') == 1
    assert hook.total("frames_rejected", reason="rate_limited") == 1


async def test_every_rejected_frame_is_counted_by_its_code(
    alice: Any, presence: dict[str, Any]
) -> None:
    with override_settings(DJANGO_PRESENCE={**presence, "MAX_FRAME_SIZE": 200}):
        tab = await open_socket(alice)
    await tab.send_to(text_data="{not json")
    await tab.send_to(text_data="x" * 201)
    await request(tab, "no_such_request")
    await request(tab, "broadcast", {"message": "hi"})  # alice is not staff
    await request(tab, "direct_message", {"target_user_id": "nope", "message": "x"})
    await request(tab, "direct_message", {"target_user_id": 987654, "message": "x"})
    codes = [(await receive_type(tab, "error"))["data"]["code"] for _ in range(6)]
    await assert_usable(tab)
    await tab.disconnect()

    snap = metrics.snapshot()
    for code in codes:
        assert snap[f'frames_rejected{{reason="{code}"}}'] == 1, code
    assert sorted(codes) == sorted(
        ["invalid_json", "too_large", "unknown_type", "forbidden", "invalid_payload", "not_found"]
    )
    assert snap['frames_rejected{reason="rate_limited"}'] == 0


async def test_a_flood_close_is_counted_and_logged_as_a_warning(
    alice: Any, presence: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    limits = {"RATE_LIMIT_RATE": 0.01, "RATE_LIMIT_BURST": 1, "FLOOD_CLOSE_AFTER": 3}
    with override_settings(DJANGO_PRESENCE={**presence, **limits}):
        tab = await open_socket(alice)
    for _ in range(10):
        await tab.send_json_to({"type": "ping"})
    while (output := await tab.receive_output(timeout=TIMEOUT))["type"] != "websocket.close":
        pass
    assert output["code"] == CLOSE_FLOODING
    await tab.disconnect()

    assert count("flood_closes") == 1
    assert count('frames_rejected{reason="rate_limited"}') == 3
    [record] = [r for r in caplog.records if "flooding" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.name == "django_presence.consumers.user"
    assert record.__dict__["user_id"] == alice.pk
    assert record.__dict__["server"] == SERVER_ID
    assert record.__dict__["connection_id"]


# -- a hook that raises -----------------------------------------------------------------------


async def test_a_hook_that_raises_never_breaks_presence(
    alice: Any, presence: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str, value: int, labels: dict[str, str]) -> None:
        raise RuntimeError("the exporter is down")

    with override_settings(DJANGO_PRESENCE={**presence, "METRICS_HOOK": broken}):
        tab = await open_socket(alice)
        await assert_usable(tab)
        await request(tab, "no_such_request")
        assert (await receive_type(tab, "error"))["data"]["code"] == "unknown_type"
        await assert_usable(tab)
        assert await user_online_service.ais_user_online(alice.pk)
        await tab.disconnect()
        assert not await user_online_service.ais_user_online(alice.pk)

    assert count("connections_opened") == count("connections_closed") == 1
    # opened, unknown_type, closed (and the transitions, once services count them).
    assert count("hook_errors") >= 3
    failures = [r for r in caplog.records if r.name == "django_presence.metrics"]
    # Logged once, with its traceback; the next failures within a minute are only counted.
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None
    assert "the exporter is down" in str(failures[0].exc_info[1])
    # The first count of a connection is its transition: connections_opened follows it,
    # once the registration succeeded (a refused connection is not counted as opened).
    assert failures[0].__dict__["counter"] == "transitions"


# -- the heartbeat ----------------------------------------------------------------------------


async def test_sweeps_and_swept_connections(
    alice: Any, presence: dict[str, Any], hook: HookLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="django_presence")
    fast = {**presence, "CONNECTION_TTL": 0.2, "HEARTBEAT_INTERVAL": 0.1, "METRICS_HOOK": hook}
    with override_settings(DJANGO_PRESENCE=fast):
        # Two connections of a crashed process: registered, never heartbeated.
        await user_online_service.aadd_user_connection(alice.pk)
        await user_online_service.aadd_user_connection(alice.pk)
        await asyncio.sleep(0.4)
        heartbeat = Runtime()  # beat() by hand: no periodic task
        await heartbeat.beat()
        await asyncio.sleep(0.1)  # the sweep lock (0.9 interval) has expired
        await heartbeat.beat()
        await get_backend().aclose()

    assert count("sweeps") == 2
    assert count("connections_swept") == 2
    assert hook.total("connections_swept") == 2
    [record] = [r for r in caplog.records if r.getMessage().startswith("Swept 2")]
    assert record.levelno == logging.INFO
    assert record.name == "django_presence.runtime"
    assert (record.__dict__["removed"], record.__dict__["offline"], record.__dict__["server"]) == (
        2,
        1,
        SERVER_ID,
    )


async def test_connections_the_backend_lost_are_counted_and_logged_as_a_warning(
    alice: Any, presence: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    heartbeat = Runtime()
    for cid in ("c1", "c2"):
        heartbeat.connections[cid] = str(alice.pk)
        await user_online_service.aadd_user_connection(alice.pk, cid)
    await get_backend().clear()  # Redis restarted without persistence

    await heartbeat.beat()
    await heartbeat.stop()  # it reconciles 1.5 intervals later: not in this test

    assert count("connections_restored") == 2
    [record] = [r for r in caplog.records if "had lost 2 open connections" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert (record.__dict__["connections"], record.__dict__["server"]) == (2, SERVER_ID)
    await get_backend().aclose()


async def test_heartbeat_failures_are_counted_and_logged(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A real Redis backend whose server is unreachable (nothing listens on port 1).
    unreachable = presence_settings_for(
        "redis", redis_url, REDIS_URL="redis://127.0.0.1:1/0", HEARTBEAT_INTERVAL=0.05
    )
    with override_settings(DJANGO_PRESENCE=unreachable):
        heartbeat = get_runtime()
        heartbeat.track_connection("1", "c1")
        deadline = time.monotonic() + 10
        while count("heartbeat_failures") < 2:
            assert time.monotonic() < deadline, "the heartbeat did not fail twice"
            await asyncio.sleep(0.02)
        assert heartbeat.running
        await heartbeat.stop()
        await get_backend().aclose()

    failures = [r for r in caplog.records if "heartbeat failed (1 connections)" in r.getMessage()]
    assert len(failures) >= 2
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None
    assert failures[0].__dict__["server"] == SERVER_ID


async def test_a_failed_register_is_counted(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = presence_settings_for("redis", redis_url, REDIS_URL="redis://127.0.0.1:1/0")
    user = await database_sync_to_async(User.objects.create_user)("bob")
    with override_settings(DJANGO_PRESENCE=unreachable):
        tab = await open_socket(user)  # the socket opens all the same
        await assert_usable(tab)
        await tab.disconnect()
        await get_backend().aclose()
    snap = metrics.snapshot()
    assert snap['connection_errors{operation="register"}'] == 1
    assert snap['connection_errors{operation="unregister"}'] == 1
    [record] = [r for r in caplog.records if r.getMessage().startswith("Could not register")]
    assert record.__dict__["user_id"] == user.pk


def test_the_operations_page_lists_exactly_the_counters() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = page.split("## Metrics", 1)[1].split("###", 1)[0]
    rows = {
        line.split("|")[1].strip().strip("`") for line in section.splitlines() if "| `" in line
    }
    assert rows == set(metrics.COUNTERS)


async def test_a_channel_layer_outage_logs_once_per_process_and_groups_come_back(
    alice: Any, presence: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis of the channel layer stops, then comes back empty, with 4 sockets open."""
    from channels.layers import channel_layers

    from django_presence.services import user_messaging_service

    from .conftest import redis_channel_layer_config
    from .servers import RedisProcess
    from .test_redis_backend import _until

    server = RedisProcess().start()
    restarted = None
    config = redis_channel_layer_config(server.url)
    config["CONFIG"]["hosts"][0]["socket_connect_timeout"] = 0.5
    try:
        with override_settings(CHANNEL_LAYERS={"default": config}):
            tabs = [await open_socket(alice) for _ in range(4)]
            caplog.set_level(logging.DEBUG, "django_presence")
            server.stop()

            async def every_socket_retried() -> bool:
                return count("channel_layer_failures") >= 8

            await _until(every_socket_retried, timeout=20)
            unavailable = [r for r in caplog.records if "Channel layer unavailable" in r.message]
            assert len(unavailable) >= 8
            assert [r.levelname for r in unavailable].count("WARNING") == 1  # not one per socket

            closing = tabs.pop()  # a socket that closes during the outage
            await closing.disconnect(timeout=10)
            leave = [r for r in caplog.records if "Could not leave" in r.message]
            assert [r.levelname for r in leave] == ["DEBUG"]  # one line, not one per group
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

            restarted = RedisProcess(port=server.port).start()  # empty: group memberships gone

            async def recovered() -> bool:
                return "Channel layer available again" in caplog.text

            await _until(recovered, timeout=20)
            await user_messaging_service.send_notification_to_user(alice.pk, "Back", "hello")
            for tab in tabs:  # every open socket joined its user's group again
                assert (await receive_type(tab, "notification"))["data"]["title"] == "Back"
                await tab.disconnect()
    finally:
        channel_layers.backends.clear()
        for process in (server, restarted):
            if process is not None and process.process is not None:
                process.stop()
