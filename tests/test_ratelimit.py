"""Rate limits of ws/user/: token buckets per connection and per user, and flood closing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_presence.exceptions import PresenceImproperlyConfigured
from django_presence.protocol import CLOSE_FLOODING
from django_presence.ratelimit import FloodDetector, TokenBucket, UserBuckets, user_buckets
from tests.asgi import application

from .test_user_consumer import TIMEOUT, assert_usable, open_socket, receive
from .tokens import make_token


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the pieces ------------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 20, clock=clock)
    assert all(bucket.take() for _ in range(20))
    assert not bucket.take()
    clock.now += 0.1  # one token back
    assert bucket.take()
    assert not bucket.take()
    clock.now += 100  # never more than the burst
    assert sum(bucket.take() for _ in range(50)) == 20


def test_token_bucket_give_back_never_exceeds_the_burst() -> None:
    bucket = TokenBucket(1, 2, clock=Clock())
    bucket.give_back()
    assert sum(bucket.take() for _ in range(5)) == 2


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 5), (-1, 5), (True, 5), ("10", 5), (10, 0), (10, 0.5), (10, None)]
)
def test_token_bucket_validates_its_arguments(rate: Any, burst: Any) -> None:
    with pytest.raises(ValueError, match="got"):
        TokenBucket(rate, burst)


def test_user_buckets_are_shared_and_released_with_the_last_connection() -> None:
    buckets = UserBuckets()
    first = buckets.acquire("7", 1, 5)
    assert buckets.acquire("7", 1, 5) is first
    assert len(buckets) == 1
    buckets.release("7")
    assert len(buckets) == 1
    buckets.release("7")
    assert len(buckets) == 0
    buckets.release("7")  # releasing an unknown user is harmless
    assert buckets.acquire("7", 1, 5) is not first


def test_flood_detector_counts_within_its_window() -> None:
    clock = Clock()
    detector = FloodDetector(3, 10, clock=clock)
    assert not detector.record()
    assert not detector.record()
    clock.now += 11  # the first two fall out of the window
    assert not detector.record()
    assert not detector.record()
    assert detector.record()


# -- through the consumer --------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def user(presence: dict[str, Any]) -> Any:
    return await get_user_model().objects.acreate(username="typist")


async def send_pings(tab: WebsocketCommunicator, count: int) -> list[Any]:
    """Send ``count`` pings at once and collect the ``count`` answers."""
    for i in range(count):
        await tab.send_json_to({"type": "ping", "id": i})
    return [await receive(tab) for _ in range(count)]


def codes(frames: list[Any]) -> list[str]:
    return [f["data"]["code"] if f["type"] == "error" else f["type"] for f in frames]


@pytestmark_db
async def test_a_burst_over_the_default_limit_is_refused_and_the_socket_recovers(
    user: Any,
) -> None:
    tab = await open_socket(user)
    frames = await send_pings(tab, 25)
    # 20 tokens, plus whatever refilled at 10 a second while the frames were handled.
    assert codes(frames[:20]) == ["pong"] * 20
    assert "rate_limited" in codes(frames[20:])
    refused = [f for f in frames if f["type"] == "error"]
    assert all("id" not in f for f in refused)  # refused unread: no id to echo
    # Tokens come back at 10 a second: within a few seconds a ping passes again.
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        await asyncio.sleep(0.2)
        await tab.send_json_to({"type": "ping"})
        if (await receive(tab))["type"] == "pong":
            break
        assert asyncio.get_running_loop().time() < deadline
    await tab.disconnect()


@pytestmark_db
async def test_a_person_typing_is_never_limited(user: Any) -> None:
    tab = await open_socket(user)
    # Ten messages a second for three seconds, faster than anyone types and sends.
    for i in range(30):
        await tab.send_json_to({"type": "ping", "id": i})
        assert (await receive(tab))["type"] == "pong"
        await asyncio.sleep(0.1)
    await tab.disconnect()


@pytestmark_db
async def test_the_user_limit_is_shared_by_the_users_tabs(
    user: Any, presence: dict[str, Any]
) -> None:
    limits = {
        "RATE_LIMIT_RATE": 0.01,
        "RATE_LIMIT_BURST": 100,
        "USER_RATE_LIMIT_RATE": 0.01,
        "USER_RATE_LIMIT_BURST": 10,
    }
    with override_settings(DJANGO_PRESENCE={**presence, **limits}):
        tab1, tab2 = await open_socket(user), await open_socket(user)
        other = await open_socket(await get_user_model().objects.acreate(username="other"))
    results = codes(await send_pings(tab1, 6)) + codes(await send_pings(tab2, 6))
    assert results.count("pong") == 10
    assert results.count("rate_limited") == 2
    # Another user has a bucket of their own.
    assert codes(await send_pings(other, 10)) == ["pong"] * 10
    for tab in (tab1, tab2, other):
        await tab.disconnect()
    assert str(user.pk) not in user_buckets._buckets


@pytestmark_db
async def test_a_connection_that_keeps_flooding_is_closed_with_4008(
    user: Any, presence: dict[str, Any]
) -> None:
    limits = {"RATE_LIMIT_RATE": 0.01, "RATE_LIMIT_BURST": 3, "FLOOD_CLOSE_AFTER": 5}
    with override_settings(DJANGO_PRESENCE={**presence, **limits}):
        tab = await open_socket(user)
        bystander = await open_socket(user)
    for _ in range(50):
        await tab.send_json_to({"type": "ping"})
    outputs = []
    while True:
        output = await tab.receive_output(timeout=TIMEOUT)
        outputs.append(output)
        if output["type"] == "websocket.close":
            break
        assert len(outputs) < 50
    assert outputs[-1] == {"type": "websocket.close", "code": CLOSE_FLOODING}
    # 3 answered, 5 refused, then closed: the rest was never answered.
    assert len(outputs) == 3 + 5 + 1
    await tab.disconnect()  # what the server does once the close frame is sent
    await assert_usable(bystander)  # the user's other connection is untouched
    await bystander.disconnect()


@pytestmark_db
async def test_limits_can_be_turned_off(user: Any, presence: dict[str, Any]) -> None:
    limits = {"RATE_LIMIT_RATE": None, "USER_RATE_LIMIT_RATE": None, "FLOOD_CLOSE_AFTER": None}
    with override_settings(DJANGO_PRESENCE={**presence, **limits}):
        tab = await open_socket(user)
    assert codes(await send_pings(tab, 200)) == ["pong"] * 200
    await tab.disconnect()


@pytestmark_db
@pytest.mark.parametrize(
    "bad",
    [
        {"RATE_LIMIT_RATE": "fast"},
        {"RATE_LIMIT_RATE": 0},
        {"RATE_LIMIT_BURST": 0},
        {"USER_RATE_LIMIT_BURST": None},
        {"FLOOD_CLOSE_AFTER": 0},
        {"FLOOD_CLOSE_AFTER": 2.5},
        {"FLOOD_WINDOW": 0},
        {"MAX_FRAME_SIZE": 0},
    ],
)
async def test_bad_limit_settings_refuse_the_socket_with_a_clear_error(
    user: Any, presence: dict[str, Any], bad: dict[str, Any]
) -> None:
    key = next(iter(bad))
    with override_settings(DJANGO_PRESENCE={**presence, **bad}):
        communicator = WebsocketCommunicator(application, f"/ws/user/?token={make_token(user.pk)}")
        with pytest.raises(PresenceImproperlyConfigured, match=key):
            # The error surfaces when the communicator gives up waiting for the accept.
            await communicator.connect(timeout=0.2)
