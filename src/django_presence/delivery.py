"""Recoverable delivery: message streams, their history, and the undelivered fallback.

Every message the package sends to users is appended to a *stream* in the backend before
it goes out over the channel layer, and carries the stream's name, its offset and the
stream's epoch (see :class:`~django_presence.backends.StreamPosition`). A client that
reconnects names the last offset it saw and replays what it missed; a message to a user
that no client of theirs acknowledged within ``UNDELIVERED_AFTER`` is handed, once across
all servers, to :data:`~django_presence.signals.message_undelivered`.

Streams, by backend name (the wire names are in :mod:`django_presence.protocol`):

- ``user:<user key>``: one user's notifications and direct messages (wire ``user``);
- ``broadcast``: the system broadcasts, one stream for everybody (wire ``broadcast``);
- ``group:<name>``: a client group's messages (wire ``group:<name>``).

This module is the engine's part: names, limits, publishing, and the fallback. The
consumer replays (:mod:`django_presence.consumers.streams`), the runtime's beat checks
epochs and takes due messages, the messaging service publishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from . import protocol, signals
from .backends import StreamLimits, StreamPosition, Undelivered, get_backend
from .conf import number_setting, valid_setting
from .ids import SERVER_ID, pk_or_none

logger = logging.getLogger(__name__)

#: Due messages one call of :func:`hand_over_undelivered` takes from the backend.
DUE_LIMIT = 1000

BROADCAST_STREAM = "broadcast"
_USER_PREFIX = "user:"


@dataclass(frozen=True)
class Delivery:
    """What a send stored: the stream's backend name, the message's offset and epoch.

    ``offset`` is None when the message was not stored (``store=False``, or
    ``HISTORY_SIZE`` 0): it reached whoever was connected, and nobody else.
    """

    stream: str
    offset: int | None = None
    epoch: str | None = None

    @property
    def stored(self) -> bool:
        """Whether a client that reconnects can still receive the message."""
        return self.offset is not None


def user_stream(user_key: str) -> str:
    """The backend name of the stream of user ``user_key`` (a backend user key)."""
    return _USER_PREFIX + user_key


def group_stream(name: str) -> str:
    """The backend name (and wire name) of client group ``name``'s stream."""
    return protocol.STREAM_GROUP_PREFIX + name


def wire_name(stream: str) -> str:
    """The name a client knows ``stream`` by: its own stream is ``user``."""
    return protocol.STREAM_USER if stream.startswith(_USER_PREFIX) else stream


def limits() -> StreamLimits:
    """The history each stream keeps, from the ``HISTORY_*`` settings."""
    return StreamLimits(
        size=int(number_setting("HISTORY_SIZE")),
        ttl=number_setting("HISTORY_TTL", allow_zero=False),
        meta_ttl=max(
            number_setting("HISTORY_META_TTL", allow_zero=False),
            number_setting("HISTORY_TTL", allow_zero=False),
        ),
    )


def undelivered_after() -> float | None:
    """``UNDELIVERED_AFTER`` in seconds, or None when the fallback is off."""
    value = valid_setting("UNDELIVERED_AFTER")
    return None if value is None else float(value)


async def publish(
    stream: str, event: dict[str, Any], *, store: bool = True, track_user: str | None = None
) -> Delivery:
    """Append ``event`` (a channel-layer event) to ``stream`` and add its position to it.

    Returns the :class:`Delivery`; ``event`` gains ``stream``, ``offset`` and ``epoch``
    keys when it was stored. With ``track_user`` (a user key), a message that user does
    not acknowledge in time is handed to the fallback.
    """
    stream_limits = limits()
    if not store or stream_limits.size == 0:
        return Delivery(stream)
    delay = undelivered_after() if track_user is not None else None
    position: StreamPosition = await get_backend().stream_publish(
        stream,
        json.dumps(event, separators=(",", ":")),
        limits=stream_limits,
        track=None if delay is None or track_user is None else (track_user, delay),
    )
    event.update(stream=stream, offset=position.offset, epoch=position.epoch)
    return Delivery(stream, position.offset, position.epoch)


def frame_of_event(event: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The ``(type, data)`` a ``ws/user/`` client receives for a stored event, if any."""
    kind = event.get("type")
    extra = event.get("extra") or {}
    if kind == protocol.EVENT_NOTIFICATION:
        return protocol.NOTIFICATION, {
            **extra,
            "title": event["title"],
            "message": event["message"],
        }
    if kind == protocol.EVENT_DIRECT_MESSAGE:
        return protocol.DIRECT_MESSAGE, {
            "from_user_id": event["from_user_id"],
            "message": event["message"],
            "sent_at": event["sent_at"],
        }
    if kind == protocol.EVENT_BROADCAST:
        return protocol.SYSTEM_BROADCAST, {**extra, "message": event["message"]}
    if kind == protocol.EVENT_GROUP_MESSAGE:
        return protocol.GROUP_MESSAGE, {
            **extra,
            "group": event["group"],
            "from_user_id": event["from_user_id"],
            "message": event["message"],
        }
    return None


def stored_frame(payload: str, stream: str, offset: int, epoch: str) -> dict[str, Any] | None:
    """The client frame of a stored payload: ``{"type", "data", "stream", "offset", "epoch"}``.

    None for a payload this version cannot turn into a frame (written by another).
    """
    try:
        frame = frame_of_event(json.loads(payload))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if frame is None:
        return None
    return {
        "type": frame[0],
        "data": frame[1],
        "stream": wire_name(stream),
        "offset": offset,
        "epoch": epoch,
    }


# -- the fallback ----------------------------------------------------------------------------


async def hand_over_undelivered(*, limit: int = DUE_LIMIT) -> int:
    """Send ``message_undelivered`` for the due messages nobody acknowledged; how many.

    Called by every server's runtime each beat: the backend hands each due message to
    one caller only, so each signal is sent once across servers. A process that dies
    between taking a message and sending the signal loses that signal (at most once).
    """
    if undelivered_after() is None:
        return 0
    backend = get_backend()
    due = await backend.stream_due(limit=limit)
    if not due:
        return 0
    clock = await backend.now()
    wall = time.time()
    for item in due:
        await _send_undelivered(item, wall - (clock - item.time))
    return len(due)


async def _send_undelivered(item: Undelivered, sent_at: float) -> None:
    user_id = pk_or_none(item.user_id)
    extra = {"user_id": item.user_id, "server": SERVER_ID, "offset": item.offset}
    if user_id is None:
        logger.warning("Undelivered message for unknown user key %r", item.user_id, extra=extra)
        return
    message = (
        None
        if item.payload is None
        else stored_frame(item.payload, item.stream, item.offset, item.epoch)
    )
    try:
        await signals.send_robustly(
            signals.message_undelivered,
            "message_undelivered",
            sender=Undelivered,
            log_extra=extra,
            user_id=user_id,
            message=message,
            offset=item.offset,
            epoch=item.epoch,
            sent_at=_aware(sent_at),
        )
    except Exception:
        # The dispatch itself failed; the other due messages go on.
        logger.exception("Could not send message_undelivered", extra=extra)


def _aware(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


# -- each server's beat -------------------------------------------------------------------------


class StreamFollower(Protocol):
    """A connection that follows streams (``UserConsumer``), as the beat sees it."""

    def presence_streams(self) -> Collection[str]:
        """The backend names of the streams followed."""

    async def presence_check_streams(self, positions: Mapping[str, StreamPosition | None]) -> None:
        """Catch up on followed streams that moved on, or lost their history."""


async def beat(
    followers: Iterable[StreamFollower],
    delivered: Mapping[tuple[str, str], tuple[str, int]],
    *,
    hand_over: bool = True,
) -> None:
    """What a server does for delivery every heartbeat interval.

    Records the delivered offsets its connections sent since the last beat (one backend
    call), lets each connection catch up on streams whose position moved past it or
    whose epoch changed (one read of every followed stream's position, so a client
    learns within one interval that the backend lost its history), and, with
    ``hand_over``, hands the due undelivered messages to the fallback.
    """
    backend = get_backend()
    stream_limits = limits()
    if delivered:
        await backend.stream_ack(
            [(s, user, epoch, offset, 0) for (s, user), (epoch, offset) in delivered.items()],
            limits=stream_limits,
        )
    following = [f for f in followers if f.presence_streams()]
    if following and stream_limits.size:
        streams: set[str] = set()
        for follower in following:
            streams.update(follower.presence_streams())
        positions = await backend.stream_positions(sorted(streams))
        loop = asyncio.get_running_loop()
        for follower in following:
            mine = {s: positions.get(s) for s in follower.presence_streams()}
            # Each connection catches up in a task of its own: a client that reads
            # slowly (its socket's send waits) must not hold up the beat for the others.
            task = loop.create_task(_check(follower, mine))
            _checks.add(task)
            task.add_done_callback(_checks.discard)
    if hand_over:
        await hand_over_undelivered()


# The catch-up tasks under way (a task nobody refers to may be garbage-collected).
_checks: set[asyncio.Task[None]] = set()


async def _check(follower: StreamFollower, positions: Mapping[str, StreamPosition | None]) -> None:
    try:
        await follower.presence_check_streams(positions)
    except Exception:
        # One connection's failure (its socket closed meanwhile) is not the others'.
        logger.exception("Could not check a connection's streams")


async def pending(user_key: str, *, unacknowledged: bool = False) -> list[dict[str, Any]]:
    """The frames of user ``user_key``'s stream after their delivered (or acked) offset."""
    stream = user_stream(user_key)
    backend = get_backend()
    cursor = await backend.stream_cursor(stream, user_key)
    if cursor is None:
        return []
    since = cursor.acked if unacknowledged else cursor.delivered
    (read,) = await backend.stream_read([(stream, since, cursor.epoch)], limits=limits())
    frames = (stored_frame(e.payload, stream, e.offset, read.epoch) for e in read.entries)
    return [frame for frame in frames if frame is not None]
