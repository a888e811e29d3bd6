"""Property-based fuzzing of what clients send to the ws/user/ consumer.

Whatever a client sends (random text, random JSON, request-shaped objects with wrong types,
huge strings, deep nesting, binary frames, unknown types), the consumer:

- never raises (the communicator's application ends cleanly when the client leaves),
- answers a malformed frame with exactly one ``error`` frame whose ``code`` is documented
  (``docs/protocol.md``), never with ``server_error`` (an unexpected exception),
- only ever sends documented frame types,
- stays usable: a ``ping`` sent after every fuzzed frame is answered with its ``pong``.

Rate limits are off here (they are tested in tests/test_user_consumer.py): a fuzzer is a
flood by design.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from django_presence import protocol
from django_presence.backends import reset_backend
from django_presence.consumers import UserConsumer

pytestmark = pytest.mark.django_db(transaction=True)

#: Error codes documented in docs/protocol.md that malformed input may produce.
DOCUMENTED_ERRORS = {
    "invalid_json",
    "invalid_payload",
    "unknown_type",
    "forbidden",
    "too_large",
    "not_found",
}
#: Frame types the server may send in reply to a client's request (or about itself).
DOCUMENTED_TYPES = {
    "error",
    "pong",
    "ack",
    "presence_state",
    "group_joined",
    "group_left",
    "group_presence",
    "direct_message",
    "status_changed",
    "group_message",
    "system_broadcast",
    "notification",
}
REQUEST_TYPES = list(protocol.REQUEST_TYPES)
FIELDS = ["target_user_id", "message", "group", "user_ids"]
MAX_FRAME = 65536

FUZZ = hypothesis_settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=15,
)

request_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(REQUEST_TYPES) | st.text(max_size=40) | json_values},
    optional={
        "data": st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values)
        | json_values,
        "id": json_values,
    },
)


def _nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


#: (text or bytes, whether the frame is malformed and must be answered with an error).
frames = st.one_of(
    st.text(max_size=200).map(lambda t: (t, None)),
    json_values.map(lambda v: (json.dumps(v), None)),
    request_shaped.map(lambda v: (json.dumps(v), None)),
    st.binary(max_size=300).map(lambda b: (b, True)),
    st.integers(min_value=MAX_FRAME + 1, max_value=4 * MAX_FRAME).map(
        lambda n: (json.dumps({"type": "ping", "data": {"pad": "x" * n}}), True)
    ),
    st.integers(min_value=MAX_FRAME // 4 + 1, max_value=MAX_FRAME).map(
        lambda n: (json.dumps({"type": "direct_message", "data": {"message": "é" * n}}), True)
    ),
    st.tuples(st.integers(min_value=50, max_value=40000), st.sampled_from(["list", "dict"])).map(
        lambda d: (_nested(*d), True)
    ),
    st.sampled_from(["", " ", "null", "[]", "{}", '{"type": null}', "\ud800", "1e999"]).map(
        lambda t: (t, True)
    ),
)


@pytest.fixture
def fuzz_settings() -> Iterator[None]:
    """The memory backend and the in-memory channel layer, with rate limits off."""
    presence = {
        **settings.DJANGO_PRESENCE,
        "RATE_LIMIT_RATE": None,
        "USER_RATE_LIMIT_RATE": None,
        "MAX_FRAME_SIZE": MAX_FRAME,
    }
    with override_settings(DJANGO_PRESENCE=presence):
        yield
    reset_backend()


@pytest.fixture
def fuzz_user(fuzz_settings: None) -> Any:
    """The user every fuzzed connection belongs to."""
    return get_user_model().objects.create_user("fuzzer")


def _is_valid_json_object(text: str | bytes) -> bool:
    if isinstance(text, bytes):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


async def _send_raw(tab: WebsocketCommunicator, frame: str | bytes) -> None:
    # send_to() refuses empty frames, which a real client can send.
    key = "bytes" if isinstance(frame, bytes) else "text"
    await tab.send_input({"type": "websocket.receive", key: frame})


async def _exchange(
    tab: WebsocketCommunicator, frame: str | bytes, must_error: bool | None, number: int
) -> list[dict[str, Any]]:
    """Send a frame then a ping; return the frames received before the pong."""
    await _send_raw(tab, frame)
    ping_id = f"fuzz-{number}"
    await tab.send_json_to({"type": "ping", "id": ping_id})
    received: list[dict[str, Any]] = []
    while True:
        reply = await tab.receive_json_from(timeout=10)
        if reply == {"type": "pong", "data": {}, "id": ping_id}:
            return received
        received.append(reply)
        assert len(received) < 20, received


@FUZZ
@given(batch=st.lists(frames, min_size=1, max_size=4))
async def test_any_inbound_frame_gets_a_documented_answer_and_the_socket_stays_usable(
    fuzz_user: Any, batch: list[tuple[str | bytes, bool | None]]
) -> None:
    tab = WebsocketCommunicator(UserConsumer.as_asgi(), "/ws/user/")
    tab.scope["user"] = fuzz_user
    connected, _ = await tab.connect(timeout=10)
    assert connected
    for number, (frame, must_error) in enumerate(batch):
        if must_error is None:
            # Text frames: anything that is not a JSON object is malformed.
            must_error = not _is_valid_json_object(frame)
        received = await _exchange(tab, frame, must_error, number)
        for reply in received:
            assert reply.get("type") in DOCUMENTED_TYPES, reply
            assert isinstance(reply.get("data"), dict), reply
            if reply["type"] == "error":
                assert reply["data"]["code"] in DOCUMENTED_ERRORS, (frame, reply)
                assert isinstance(reply["data"]["message"], str)
                assert reply["data"]["message"]
        if must_error:
            errors = [r for r in received if r["type"] == "error"]
            assert len(errors) == 1, (frame[:200], received)
    # The consumer ends cleanly: disconnect() re-raises anything the application raised.
    await tab.disconnect()


@FUZZ
@given(frame=frames)
async def test_malformed_frames_never_reach_another_user(
    fuzz_user: Any, frame: tuple[str | bytes, bool | None]
) -> None:
    """Another connected user receives nothing, whatever the fuzzer sends."""
    # database_sync_to_async, not aget_or_create: it closes the thread's connection, so
    # the PostgreSQL test database can be dropped at the end.
    other = await database_sync_to_async(
        lambda: get_user_model().objects.get_or_create(username="bystander")
    )()
    bystander = WebsocketCommunicator(UserConsumer.as_asgi(), "/ws/user/")
    bystander.scope["user"] = other[0]
    tab = WebsocketCommunicator(UserConsumer.as_asgi(), "/ws/user/")
    tab.scope["user"] = fuzz_user
    assert (await bystander.connect(timeout=10))[0]
    assert (await tab.connect(timeout=10))[0]
    text, _ = frame
    await _send_raw(tab, text)
    await tab.send_json_to({"type": "ping", "id": "after"})
    while (await tab.receive_json_from(timeout=10)).get("id") != "after":
        pass
    assert await bystander.receive_nothing(timeout=0.05)
    await tab.disconnect()
    await bystander.disconnect()
