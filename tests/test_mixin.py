"""UserOnlineStatusMixin through WebsocketCommunicator, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.consumers import CLOSE_TOKEN_EXPIRED, UserOnlineStatusMixin
from django_presence.middleware import JWTAuthMiddlewareStack
from django_presence.runtime import get_runtime
from django_presence.services import user_online_service

from .tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)


class EchoConsumer(AsyncWebsocketConsumer):
    """A project's consumer: echoes text, says goodbye on disconnect into a list."""

    disconnected: list[int] = []

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data="hello")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")

    async def disconnect(self, code: int) -> None:
        EchoConsumer.disconnected.append(code)


class TrackedEchoConsumer(UserOnlineStatusMixin, EchoConsumer):
    """The same consumer, tracked."""


class RejectingConsumer(UserOnlineStatusMixin, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.close()


class CrashingConsumer(UserOnlineStatusMixin, AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError("a bug in the project's consumer")


def app(consumer: type) -> Any:
    return JWTAuthMiddlewareStack(consumer.as_asgi())


async def open_socket(user: Any) -> WebsocketCommunicator:
    """A connected TrackedEchoConsumer socket of ``user``, past its greeting."""
    communicator = WebsocketCommunicator(
        app(TrackedEchoConsumer), f"/ws/?token={make_token(user.pk)}"
    )
    assert (await communicator.connect())[0]
    assert await communicator.receive_from() == "hello"
    return communicator


@pytest.fixture
async def user(presence: dict[str, Any]) -> Any:
    return await get_user_model().objects.acreate(username="bob")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true, failing after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition still false after {timeout} s")
        await asyncio.sleep(0.02)


async def db_online(user: Any) -> bool:
    await user.arefresh_from_db()
    return bool(user.is_online)


async def test_accepted_connection_is_online_until_it_disconnects(user: Any) -> None:
    communicator = WebsocketCommunicator(
        app(TrackedEchoConsumer), f"/ws/?token={make_token(user.pk)}"
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_from() == "hello"
    assert await user_online_service.ais_user_online(user.pk)
    assert await user_online_service.aget_user_connection_count(user.pk) == 1
    assert await db_online(user)
    assert list(dict(get_runtime().connections).values()) == [str(user.pk)]

    await communicator.disconnect()
    assert not await user_online_service.ais_user_online(user.pk)
    assert dict(get_runtime().connections) == {}
    await user.arefresh_from_db()
    assert (user.is_online, user.last_seen is not None) == (False, True)


async def test_two_tabs_count_as_one_user(user: Any) -> None:
    tabs = [
        WebsocketCommunicator(app(TrackedEchoConsumer), f"/ws/?token={make_token(user.pk)}")
        for _ in range(2)
    ]
    for tab in tabs:
        assert (await tab.connect())[0]
    assert await user_online_service.aget_user_connection_count(user.pk) == 2
    await tabs[0].disconnect()
    assert await user_online_service.ais_user_online(user.pk)
    assert await db_online(user)
    await tabs[1].disconnect()
    assert not await user_online_service.ais_user_online(user.pk)
    assert not await db_online(user)


async def test_mixin_does_not_change_the_consumers_behaviour(user: Any) -> None:
    async def exchange(consumer: type) -> list[Any]:
        EchoConsumer.disconnected = []
        communicator = WebsocketCommunicator(app(consumer), f"/ws/?token={make_token(user.pk)}")
        connected, subprotocol = await communicator.connect()
        frames: list[Any] = [connected, subprotocol, await communicator.receive_from()]
        for text in ("one", "two"):
            await communicator.send_to(text_data=text)
            frames.append(await communicator.receive_from())
        assert await communicator.receive_nothing()
        await communicator.disconnect(code=4321)
        return [*frames, EchoConsumer.disconnected]

    plain = await exchange(EchoConsumer)
    tracked = await exchange(TrackedEchoConsumer)
    assert plain == tracked == [True, None, "hello", "echo:one", "echo:two", [4321]]


async def test_a_rejected_connection_is_never_registered(user: Any) -> None:
    communicator = WebsocketCommunicator(
        app(RejectingConsumer), f"/ws/?token={make_token(user.pk)}"
    )
    connected, _ = await communicator.connect()
    assert not connected
    assert not await user_online_service.ais_user_online(user.pk)
    assert dict(get_runtime().connections) == {}


async def test_an_anonymous_connection_is_not_tracked(presence: dict[str, Any]) -> None:
    communicator = WebsocketCommunicator(app(TrackedEchoConsumer), "/ws/")
    assert (await communicator.connect())[0]
    assert dict(get_runtime().connections) == {}
    await communicator.disconnect()


async def test_plain_accept_answers_with_the_token_subprotocol(user: Any) -> None:
    token = make_token(user.pk)
    communicator = WebsocketCommunicator(
        app(TrackedEchoConsumer), "/ws/", subprotocols=["access_token", token]
    )
    connected, subprotocol = await communicator.connect()
    assert (connected, subprotocol) == (True, "access_token")
    await communicator.disconnect()


async def test_a_connection_is_closed_when_its_token_expires(user: Any) -> None:
    communicator = WebsocketCommunicator(
        app(TrackedEchoConsumer), f"/ws/?token={make_token(user.pk, lifetime=1.5)}"
    )
    assert (await communicator.connect())[0]
    assert await communicator.receive_from() == "hello"
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": CLOSE_TOKEN_EXPIRED}
    await communicator.disconnect()
    await eventually(lambda: _offline(user.pk))


async def _offline(user_id: Any) -> bool:
    return not await user_online_service.ais_user_online(user_id)


async def test_a_consumer_that_crashes_is_unregistered(user: Any) -> None:
    communicator = WebsocketCommunicator(
        app(CrashingConsumer), f"/ws/?token={make_token(user.pk)}"
    )
    assert (await communicator.connect())[0]
    assert await user_online_service.ais_user_online(user.pk)
    await communicator.send_to(text_data="boom")
    with pytest.raises(RuntimeError, match="a bug in the project's consumer"):
        await communicator.wait(timeout=5)
    assert not await user_online_service.ais_user_online(user.pk)
    assert dict(get_runtime().connections) == {}


async def test_grace_period_keeps_a_reloading_user_online(
    user: Any, presence: dict[str, Any]
) -> None:
    transitions: list[str] = []

    from django_presence.signals import user_offline, user_online

    def on_online(sender: Any, user_id: Any, **kwargs: Any) -> None:
        transitions.append("online")

    def on_offline(sender: Any, user_id: Any, **kwargs: Any) -> None:
        transitions.append("offline")

    user_online.connect(on_online)
    user_offline.connect(on_offline)
    try:
        with override_settings(DJANGO_PRESENCE={**presence, "OFFLINE_GRACE_PERIOD": 0.5}):
            first = WebsocketCommunicator(
                app(TrackedEchoConsumer), f"/ws/?token={make_token(user.pk)}"
            )
            assert (await first.connect())[0]
            await first.disconnect()
            # The page reloads within the grace period: no offline/online pair.
            assert await user_online_service.ais_user_online(user.pk)
            assert await user_online_service.aget_user_connection_count(user.pk) == 0
            second = WebsocketCommunicator(
                app(TrackedEchoConsumer), f"/ws/?token={make_token(user.pk)}"
            )
            assert (await second.connect())[0]
            await second.disconnect()
            assert transitions == ["online"]
            # Nobody comes back: the sweep announces offline once the grace has passed.
            await eventually(lambda: _swept_offline(user.pk))
            assert transitions == ["online", "offline"]
            assert not await db_online(user)
    finally:
        user_online.disconnect(on_online)
        user_offline.disconnect(on_offline)


async def _swept_offline(user_id: Any) -> bool:
    await user_online_service.asweep()
    return await _offline(user_id)


def test_the_mixin_on_a_sync_consumer_fails_at_the_class_statement() -> None:
    from channels.generic.websocket import JsonWebsocketConsumer, WebsocketConsumer

    for sync_base in (WebsocketConsumer, JsonWebsocketConsumer):
        with pytest.raises(TypeError, match="needs an async one") as info:
            type("SyncRoom", (UserOnlineStatusMixin, sync_base), {"__module__": "myapp"})
        assert "myapp.SyncRoom" in str(info.value)


async def test_frames_to_a_tracked_consumer_are_the_users_activity(
    user: Any, presence: dict[str, Any]
) -> None:
    """A video call's traffic keeps its user from turning away; silence does not."""
    idle = {
        **presence,
        "IDLE_AFTER": 0.6,
        "ACTIVITY_WRITE_INTERVAL": 0.1,
        "HEARTBEAT_INTERVAL": 0.1,
    }

    async def state() -> str:
        return (await user_online_service.aget_presence([user.pk]))[user.pk].state

    with override_settings(DJANGO_PRESENCE=idle):
        socket = await open_socket(user)
        assert await state() == "online"
        # Talking for twice IDLE_AFTER: never away (and the echo is unchanged).
        for i in range(12):
            await socket.send_to(text_data=f"frame {i}")
            assert await socket.receive_from() == f"echo:frame {i}"
            assert await state() == "online"
            await asyncio.sleep(0.1)
        # Silent: away within IDLE_AFTER plus a beat or two.
        await eventually(lambda: _is(state, "away"), timeout=3)
        # One frame: online again.
        await socket.send_to(text_data="back")
        assert await socket.receive_from() == "echo:back"
        await eventually(lambda: _is(state, "online"), timeout=2)
        await socket.disconnect()


async def _is(read: Callable[[], Awaitable[str]], expected: str) -> bool:
    return await read() == expected


# -- a channel-layer receive that will not finish cancelling --------------------------------


async def test_a_layer_receive_that_will_not_cancel_is_left_behind_within_the_grace() -> None:
    """channels_redis 4.3's receive sometimes ignores a cancel; the consumer ends anyway."""
    import time

    from django_presence.consumers.layer import CANCEL_GRACE, bounded_cancellation

    release = asyncio.Event()
    cancels = 0

    async def stubborn_receive() -> dict[str, Any]:
        nonlocal cancels
        while True:
            try:
                await release.wait()
                return {"type": "late"}
            except asyncio.CancelledError:
                cancels += 1  # swallowed, as a receive stuck in a reconnect behaves

    receive = bounded_cancellation(stubborn_receive)
    task = asyncio.ensure_future(receive())
    await asyncio.sleep(0.01)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    took = time.monotonic() - started

    assert cancels == 1  # the layer's receive was asked to stop
    assert CANCEL_GRACE <= took < CANCEL_GRACE + 1.0
    # Channels awaits this receive whenever a consumer stops: a tenth of a second at most,
    # so that a burst of closing sockets is not held up a second each.
    assert CANCEL_GRACE <= 0.1
    release.set()  # the abandoned receive ends later; nothing is left unretrieved
    await asyncio.sleep(0.01)


async def test_a_layer_receive_that_cancels_ends_at_once() -> None:
    from django_presence.consumers.layer import bounded_cancellation

    inner_cancelled = asyncio.Event()

    async def plain_receive() -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            inner_cancelled.set()
            raise
        return {}

    task = asyncio.ensure_future(bounded_cancellation(plain_receive)())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 0.05)
    assert inner_cancelled.is_set()


async def test_a_layer_receive_passes_its_message_and_its_error_through() -> None:
    from django_presence.consumers.layer import bounded_cancellation

    async def one_message() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"type": "chat.message", "text": "hi"}

    async def layer_down() -> dict[str, Any]:
        await asyncio.sleep(0)
        raise ConnectionError("layer down")

    assert await bounded_cancellation(one_message)() == {"type": "chat.message", "text": "hi"}
    with pytest.raises(ConnectionError, match="layer down"):
        await bounded_cancellation(layer_down)()


async def test_a_cancelled_receive_takes_nothing_and_its_late_error_is_retrieved() -> None:
    """A receive that answers its cancel with a message or, abandoned, with an error:
    the consumer sees a cancellation either way, and asyncio reports no lost exception."""
    import gc

    from django_presence.consumers.layer import CANCEL_GRACE, bounded_cancellation

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:

        async def answers_the_cancel_with_a_message() -> dict[str, Any]:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return {"type": "late"}
            return {}

        release = asyncio.Event()

        async def fails_after_being_abandoned() -> dict[str, Any]:
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):  # stuck in a reconnect
                    await release.wait()
            raise ConnectionError("reconnect failed")

        for receive in (answers_the_cancel_with_a_message, fails_after_being_abandoned):
            pending = bounded_cancellation(receive)()
            await asyncio.sleep(0.01)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(pending, CANCEL_GRACE + 1.0)
        del pending
        release.set()
        await asyncio.sleep(0.05)
        gc.collect()  # a Future whose exception nobody read reports it when collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


def test_receives_on_event_loops_in_two_threads_do_not_share_a_context() -> None:
    """A receive given up on in one thread (its debug log held up by a slow handler)
    does not keep another thread's event loop from taking its message."""
    import logging
    import threading

    from django_presence.consumers.layer import bounded_cancellation

    entered, release = threading.Event(), threading.Event()

    class SlowHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            release.wait(10)

    async def stuck_then_given_up() -> None:
        async def stubborn() -> dict[str, Any]:
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.01)
            return {}

        pending = bounded_cancellation(stubborn)()
        await asyncio.sleep(0.01)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending

    async def one_message() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"type": "chat.message"}

    async def take_one() -> Any:
        return await asyncio.wait_for(bounded_cancellation(one_message)(), 2)

    layer_logger = logging.getLogger("django_presence.consumers.layer")
    handler, level = SlowHandler(logging.DEBUG), layer_logger.level
    layer_logger.addHandler(handler)
    layer_logger.setLevel(logging.DEBUG)
    other = threading.Thread(target=asyncio.run, args=(stuck_then_given_up(),))
    other.start()
    try:
        assert entered.wait(5)  # the other loop is inside its give-up's log call
        assert asyncio.run(take_one()) == {"type": "chat.message"}
    finally:
        release.set()
        other.join(10)
        layer_logger.removeHandler(handler)
        layer_logger.setLevel(level)
