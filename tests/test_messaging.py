"""user_messaging_service: validation, delivery, and its sync twins from threads and views."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence import groups
from django_presence.consumers import UserConsumer
from django_presence.exceptions import PresenceImproperlyConfigured
from django_presence.ids import wire_user_id
from django_presence.services import UserMessagingService, user_messaging_service

from .test_user_consumer import open_socket, receive, receive_type

pytestmark = pytest.mark.django_db(transaction=True)


def layer_settings(name: str, redis_url: str) -> dict[str, Any]:
    """CHANNEL_LAYERS with the in-memory layer or channels_redis on the test Redis."""
    if name == "memory-layer":
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": redis_url, "socket_timeout": 30}],
                "prefix": f"asgi-{uuid.uuid4().hex[:8]}",
            },
        }
    }


@pytest.fixture(params=["memory-layer", "redis-layer"])
def layer(
    request: pytest.FixtureRequest, presence: dict[str, Any], redis_url: str
) -> Iterator[str]:
    """The in-memory channel layer, then channels_redis on the test Redis."""
    with override_settings(CHANNEL_LAYERS=layer_settings(request.param, redis_url)):
        yield str(request.param)
    channel_layers.backends.clear()


# channels_redis 4.3 with redis-py 8 leaves some of 1,000 consumers of one process unable
# to stop on disconnect until cancelled, and the cancellations can outlast the test under
# load; the suite measures on the in-memory layer. PRESENCE_FAN_OUT_LAYERS=memory-layer,
# redis-layer measures both.
_FAN_OUT_LAYERS = os.environ.get("PRESENCE_FAN_OUT_LAYERS", "memory-layer").split(",")


@pytest.fixture(params=_FAN_OUT_LAYERS)
def fan_out_layer(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """A channel layer, with the in-memory presence backend (not what is measured)."""
    from .conftest import presence_settings_for

    with override_settings(
        CHANNEL_LAYERS=layer_settings(request.param, redis_url),
        DJANGO_PRESENCE=presence_settings_for("memory", redis_url, SYNC_USER_MODEL=False),
    ):
        yield str(request.param)
    channel_layers.backends.clear()


@pytest.fixture
async def alice(layer: str) -> Any:
    return await get_user_model().objects.acreate(username="alice")


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.send_notification_to_user(None, "t", "m"), TypeError),
        (lambda s: s.send_notification_to_user(True, "t", "m"), TypeError),
        (lambda s: s.send_notification_to_user(1.5, "t", "m"), TypeError),
        (lambda s: s.send_notification_to_user(1, None, "m"), TypeError),
        (lambda s: s.send_notification_to_user(1, "t", 5), TypeError),
        (lambda s: s.send_notification_to_user(1, "t", "m", when=object()), TypeError),
        (lambda s: s.send_message_to_user(None, 1, "m"), TypeError),
        (lambda s: s.send_message_to_user(1, [2], "m"), TypeError),
        (lambda s: s.send_message_to_user(1, 2, b"bytes"), TypeError),
        (lambda s: s.broadcast_system_message(None), TypeError),
        (lambda s: s.broadcast_system_message("m", data={1, 2}), TypeError),
        (lambda s: s.send_to_group(None, "m"), TypeError),
        (lambda s: s.send_to_group("bad name!", "m"), ValueError),
        (lambda s: s.send_to_group("", "m"), ValueError),
        (lambda s: s.send_to_group("ok", "m", group="other"), ValueError),
        (lambda s: s.send_to_group("ok", "m", from_user_id=1), ValueError),
    ],
)
async def test_arguments_are_validated_before_sending(
    presence: dict[str, Any], call: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        await call(user_messaging_service)
    assert "got" in str(info.value) or "fields" in str(info.value)


async def test_no_channel_layer_is_a_configuration_error(presence: dict[str, Any]) -> None:
    with (
        override_settings(DJANGO_PRESENCE={**presence, "CHANNEL_LAYER": "missing"}),
        pytest.raises(PresenceImproperlyConfigured, match="'missing'"),
    ):
        await user_messaging_service.send_notification_to_user(1, "t", "m")


def test_wire_user_id() -> None:
    assert wire_user_id(5) == 5
    assert wire_user_id("5") == 5  # the backend's string form of an integer key
    assert wire_user_id("not-a-pk") == "not-a-pk"
    value = uuid.uuid4()
    assert wire_user_id(value) == str(value)


# -- delivery --------------------------------------------------------------------------------


async def test_every_method_reaches_the_socket(alice: Any) -> None:
    tab = await open_socket(alice)
    await user_messaging_service.send_notification_to_user(alice.pk, "T", "M", priority=2)
    frame = await tab.receive_json_from(timeout=5)
    assert {k: frame.pop(k) for k in ("stream", "offset")} == {"stream": "user", "offset": 1}
    assert frame.pop("epoch")
    assert frame == {"type": "notification", "data": {"title": "T", "message": "M", "priority": 2}}
    await user_messaging_service.send_message_to_user(99, alice.pk, "direct")
    frame = await receive_type(tab, "direct_message")
    assert (frame["data"]["from_user_id"], frame["data"]["message"]) == (99, "direct")
    await user_messaging_service.broadcast_system_message("all")
    assert (await receive_type(tab, "system_broadcast"))["data"] == {"message": "all"}
    await tab.disconnect()


async def test_messages_to_users_without_connections_are_dropped(alice: Any) -> None:
    await user_messaging_service.send_notification_to_user(alice.pk, "T", "nobody home")
    tab = await open_socket(alice)
    assert await tab.receive_nothing(timeout=0.3)
    await tab.disconnect()


async def test_sync_twins_from_a_plain_thread_without_an_event_loop(alice: Any) -> None:
    tab = await open_socket(alice)
    errors: list[BaseException] = []

    def worker() -> None:
        # A Celery worker or a script: no event loop anywhere in this thread.
        try:
            with pytest.raises(RuntimeError):
                asyncio.get_running_loop()
            user_messaging_service.send_notification_to_user_sync(alice.pk, "T", "thread")
            user_messaging_service.send_message_to_user_sync(7, alice.pk, "dm")
            user_messaging_service.broadcast_system_message_sync("b", level=1)
            user_messaging_service.send_to_group_sync("room", "g")
        except BaseException as e:
            errors.append(e)

    await request_join(tab, "room")
    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
    assert not thread.is_alive()
    assert errors == []
    frames = [await receive(tab) for _ in range(4)]
    assert [f["type"] for f in frames] == [
        "notification",
        "direct_message",
        "system_broadcast",
        "group_message",
    ]
    assert frames[3]["data"] == {"group": "room", "from_user_id": None, "message": "g"}
    await tab.disconnect()


async def request_join(tab: Any, group: str) -> None:
    await tab.send_json_to({"type": "join_group", "data": {"group": group}})
    await receive_type(tab, "group_joined")


async def test_sync_twin_from_a_sync_view_under_asgi(alice: Any) -> None:
    """An ASGI server runs sync views in a thread beside the running loop, like this."""
    tab = await open_socket(alice)

    def view() -> str:
        user_messaging_service.send_notification_to_user_sync(alice.pk, "T", "from a view")
        return "200 OK"

    assert await sync_to_async(view)() == "200 OK"
    assert (await receive_type(tab, "notification"))["data"]["message"] == "from a view"
    await tab.disconnect()


async def test_sync_twin_in_async_code_raises_a_clear_error(presence: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="async"):
        user_messaging_service.send_notification_to_user_sync(1, "T", "m")


def test_sync_twins_validate_too(presence: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        user_messaging_service.send_message_to_user_sync(1, None, "m")
    with pytest.raises(ValueError, match="group name"):
        user_messaging_service.send_to_group_sync("no spaces", "m")


def test_service_is_importable_from_the_package() -> None:
    from django_presence.services import messaging

    assert isinstance(user_messaging_service, UserMessagingService)
    assert messaging.user_messaging_service is user_messaging_service


# -- fan-out measurement ---------------------------------------------------------------------


async def test_broadcast_fan_out_to_1000_connections(
    fan_out_layer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measure one broadcast_system_message to 1,000 open ws/user/ connections.

    Prints, for the service and for a raw ``group_send`` of the same event to the same
    group, the time to send and the time until every connection's client has received
    the frame (median of three rounds each, interleaved). Asserts delivery only.
    """
    from channels.testing import WebsocketCommunicator

    connections = 1000
    users = [
        await get_user_model().objects.acreate(username=f"fan{i}")
        for i in range(connections // 10)
    ]
    sockets = []
    for i in range(connections):
        communicator = WebsocketCommunicator(UserConsumer.as_asgi(), "/ws/user/")
        communicator.scope["user"] = users[i % len(users)]
        assert (await communicator.connect(timeout=30))[0]
        sockets.append(communicator)

    async def service_send() -> None:
        await user_messaging_service.broadcast_system_message("fan-out")

    async def raw_send() -> None:
        await get_channel_layer().group_send(
            groups.broadcast_group(),
            {"type": "presence.broadcast", "message": "fan-out", "extra": {}},
        )

    async def measure(send: Any) -> tuple[float, float]:
        waiting = asyncio.ensure_future(
            asyncio.gather(*(s.receive_json_from(timeout=60) for s in sockets))
        )
        await asyncio.sleep(0)
        start = time.perf_counter()
        await send()
        sent = time.perf_counter() - start
        frames = await waiting
        total = time.perf_counter() - start
        assert len(frames) == connections
        assert all(
            (f["type"], f["data"]) == ("system_broadcast", {"message": "fan-out"}) for f in frames
        )
        return sent, total

    results: dict[str, list[tuple[float, float]]] = {"service": [], "raw": []}
    for _ in range(3):
        results["service"].append(await measure(service_send))
        results["raw"].append(await measure(raw_send))

    def median_ms(values: list[float]) -> str:
        return f"{sorted(values)[len(values) // 2] * 1000:.0f} ms"

    with capsys.disabled():
        print(f"\nfan-out to {connections} connections ({fan_out_layer}):", end="")
        for name, runs in results.items():
            print(
                f" {name}: send {median_ms([r[0] for r in runs])},"
                f" all received {median_ms([r[1] for r in runs])};",
                end="",
            )
        print()
    # Together: with channels_redis, consumers closed one after the other can each wait
    # for the timeout (see _FAN_OUT_LAYERS).
    await asyncio.gather(*(s.disconnect(timeout=5) for s in sockets))
