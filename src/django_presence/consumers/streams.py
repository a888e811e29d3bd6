"""What one ``ws/user/`` connection has delivered of each stream, and how it catches up.

A connection follows its user's stream, the broadcast stream and the stream of each
client group it joined (:mod:`django_presence.delivery`). For each it keeps a cursor: the
stream's epoch and the offset of the last message it sent to the client. The client is
sent every stored message exactly once and in offset order:

- on connect (and on ``join_group``), the client names the position it reached before
  (``since``); the connection replays what came after it, then goes on live;
- a live message that is not the next one (the channel layer dropped one, or another
  server's message overtook it) makes the connection read the missing ones from the
  stream first; one it already sent is dropped;
- the runtime's beat compares each cursor with its stream's position, so that a stream
  whose history was lost (the backend restarted empty), or whose last message the layer
  dropped, is caught up within one heartbeat interval.

When the missing messages cannot be replayed (trimmed, or the epoch changed), the client
gets a ``recovery`` frame with ``recovered: false`` for that stream, never a silent gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from .. import delivery, protocol
from ..backends import StreamPosition, StreamRead, get_backend
from ..runtime import get_runtime
from .frames import RequestError

logger = logging.getLogger(__name__)

#: Most ``since`` query parameters a handshake may carry (the user and broadcast streams).
MAX_SINCE = 2
#: Longest epoch a client may name.
MAX_EPOCH_LENGTH = 32


@dataclass
class Cursor:
    """How far a connection got in one stream: the epoch and the last offset sent."""

    epoch: str
    offset: int


def parse_since(query_string: bytes | str) -> dict[str, tuple[str, int]] | None:
    """The positions a handshake's ``since=<stream>:<epoch>:<offset>`` parameters name.

    None when the client asks for no recovery (neither ``recover=1`` nor a ``since``).
    Only the ``user`` and ``broadcast`` streams are named in the URL (groups name theirs
    in ``join_group``); a malformed value is ignored, as if the client had none.
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    query = parse_qs(query_string)
    values = query.get(protocol.SINCE_PARAM, [])
    if not values and query.get(protocol.RECOVER_PARAM, [""])[0] not in ("1", "true"):
        return None
    found: dict[str, tuple[str, int]] = {}
    for value in values[:MAX_SINCE]:
        parts = value.rsplit(":", 2)
        if len(parts) != 3:
            continue
        stream, epoch, offset = parts
        if stream not in (protocol.STREAM_USER, protocol.STREAM_BROADCAST):
            continue
        position = _position(epoch, offset)
        if position is not None:
            found[stream] = position
    return found


def since_field(data: Mapping[str, Any]) -> tuple[str, int] | None:
    """The ``since: {epoch, offset}`` of a request, None when absent; RequestError if bad."""
    value = data.get("since")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(protocol.INVALID_PAYLOAD, "data.since must be {epoch, offset}.")
    return position_field(value, "data.since must be")


def position_field(value: Mapping[str, Any], what: str) -> tuple[str, int]:
    """The ``(epoch, offset)`` in ``value``; RequestError starting with ``what`` if bad."""
    position = _position(value.get("epoch"), value.get("offset"))
    if position is None:
        raise RequestError(
            protocol.INVALID_PAYLOAD,
            f"{what} {{epoch: a short string, offset: an integer >= 0}}.",
        )
    return position


def _position(epoch: Any, offset: Any) -> tuple[str, int] | None:
    if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
        return None
    if isinstance(offset, str):
        offset = int(offset) if offset.isdigit() and len(offset) <= 18 else None
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**62:
        return None
    return epoch, offset


class StreamsMixin:
    """The stream cursors of ``UserConsumer``: replay, live ordering, catch-up, acks."""

    user_key: str
    # Provided by UserConsumer.
    get_presence_log_extra: Callable[[], dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Backend stream name -> cursor, for every stream this connection follows.
        self.cursors: dict[str, Cursor] = {}
        #: Whether the client asked for ``recovery`` frames on connect (and group joins).
        self.wants_recovery = False
        self._stream_lock = asyncio.Lock()

    # -- reading and sending -----------------------------------------------------------------

    async def follow_streams(
        self, requests: Sequence[tuple[str, tuple[str, int] | None]]
    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """Start following streams from the given positions (None: from now).

        Returns, by wire name, what a ``recovery`` frame says of each stream, and the
        frames to replay after it, in order. Call it under :attr:`_stream_lock`, after
        joining the streams' channel-layer groups, so nothing falls between.
        """
        reads = await self._read(
            [(s, None, None) if p is None else (s, p[1], p[0]) for s, p in requests]
        )
        info: dict[str, dict[str, Any]] = {}
        frames: list[dict[str, Any]] = []
        for (stream, since), read in zip(requests, reads, strict=True):
            start = read.offset if since is None else self._start(read, since[1])
            self.cursors[stream] = Cursor(read.epoch, start)
            replay = self._replay(stream, read)
            info[delivery.wire_name(stream)] = {
                "epoch": read.epoch,
                "offset": self.cursors[stream].offset,
                "since": start,
                "recovered": read.recovered,
                "replayed": len(replay),
            }
            frames += replay
        return info, frames

    @staticmethod
    async def _read(requests: list[tuple[str, int | None, str | None]]) -> list[StreamRead]:
        """Read streams; in a stream whose epoch changed, read its new epoch from the start.

        A reader from another epoch gets no entries from the backend (its offset means
        nothing in the new one); what the new epoch holds is still the client's to see.
        """
        backend, limits = get_backend(), delivery.limits()
        reads = await backend.stream_read(requests, limits=limits)
        restart = [
            i
            for i, ((_, since, epoch), read) in enumerate(zip(requests, reads, strict=True))
            if since is not None and epoch != read.epoch and read.offset and not read.entries
        ]
        if restart:
            again = await backend.stream_read(
                [(reads[i].stream, 0, reads[i].epoch) for i in restart], limits=limits
            )
            for i, read in zip(restart, again, strict=True):
                reads[i] = StreamRead(read.stream, read.epoch, read.offset, read.entries, False)
        return reads

    @staticmethod
    def _start(read: StreamRead, since: int) -> int:
        """The offset the client is at before the replayed entries of ``read``."""
        if read.recovered:
            return since
        return read.entries[0].offset - 1 if read.entries else read.offset

    def _replay(self, stream: str, read: StreamRead) -> list[dict[str, Any]]:
        cursor = self.cursors[stream]
        frames = []
        for entry in read.entries:
            frame = delivery.stored_frame(entry.payload, stream, entry.offset, read.epoch)
            if entry.offset <= cursor.offset or frame is None:
                continue
            cursor.offset = entry.offset
            frames.append({**frame, "replayed": True})
        return frames

    async def send_stored(self, frame: dict[str, Any]) -> None:
        """Send a stored message's frame; never raises for a closed socket."""
        try:
            # AsyncJsonWebsocketConsumer's, a base of the consumers using this mixin.
            await cast(Any, self).send_json(frame)
        except Exception:
            # Each server raises its own error for a closed socket; none is ours to fix.
            logger.debug("Could not send a stored frame to a closed socket", exc_info=True)
            return
        stream = frame.get("stream")
        if stream == protocol.STREAM_USER:
            get_runtime().note_delivered(
                delivery.user_stream(self.user_key), self.user_key, frame["epoch"], frame["offset"]
            )

    async def send_recovery(self, info: dict[str, dict[str, Any]], frames: list[Any]) -> None:
        """Send a ``recovery`` frame, then the replayed frames."""
        if info:
            await self.send_stored({"type": protocol.RECOVERY, "data": {"streams": info}})
        for frame in frames:
            await self.send_stored(frame)

    # -- live messages ---------------------------------------------------------------------

    async def deliver(self, event: dict[str, Any], frame_type: str, data: dict[str, Any]) -> None:
        """Send a live message: in order, once, after catching up on any it missed."""
        offset, stream, epoch = event.get("offset"), event.get("stream"), event.get("epoch")
        frame: dict[str, Any] = {"type": frame_type, "data": data}
        if not isinstance(offset, int) or not isinstance(stream, str) or not epoch:
            await self.send_stored(frame)  # not stored: ephemeral
            return
        frame.update(stream=delivery.wire_name(stream), offset=offset, epoch=epoch)
        async with self._stream_lock:
            cursor = self.cursors.get(stream)
            if cursor is None:
                # Followed without a position (history was off, or the read failed).
                self.cursors[stream] = Cursor(epoch, offset)
            elif cursor.epoch == epoch and offset <= cursor.offset:
                return  # sent already (replayed, or caught up)
            elif cursor.epoch != epoch or offset != cursor.offset + 1:
                await self._catch_up(stream, cursor)
                return
            else:
                cursor.offset = offset
            await self.send_stored(frame)

    async def _catch_up(self, stream: str, cursor: Cursor) -> None:
        """Send what ``stream`` holds after ``cursor``; say so when some was lost."""
        await self._catch_up_many([(stream, cursor)])

    async def _catch_up_many(self, behind: Sequence[tuple[str, Cursor]]) -> None:
        try:
            reads = await self._read(
                [(stream, cursor.offset, cursor.epoch) for stream, cursor in behind]
            )
        except Exception:
            # The backend is down: the next live message or beat tries again.
            logger.warning(
                "Could not read %d streams to catch up",
                len(behind),
                extra=self.get_presence_log_extra(),
            )
            return
        info: dict[str, dict[str, Any]] = {}
        frames: list[dict[str, Any]] = []
        for (stream, cursor), read in zip(behind, reads, strict=True):
            if not read.recovered:
                start = self._start(read, cursor.offset)
                cursor.epoch, cursor.offset = read.epoch, start
                info[delivery.wire_name(stream)] = {
                    "epoch": read.epoch,
                    "offset": read.offset,
                    "since": start,
                    "recovered": False,
                    "replayed": len(read.entries),
                }
            frames += self._replay(stream, read)
        await self.send_recovery(info, frames)

    # -- the runtime's hooks ---------------------------------------------------------------

    def presence_streams(self) -> Collection[str]:
        """The backend names of the streams this connection follows."""
        return self.cursors

    async def presence_check_streams(self, positions: Mapping[str, StreamPosition | None]) -> None:
        """Catch up on streams that moved on without us, or lost their history.

        What was lost in several streams is said in one ``recovery`` frame.
        """
        async with self._stream_lock:
            behind = [
                (stream, cursor)
                for stream, position in positions.items()
                if (cursor := self.cursors.get(stream)) is not None
                and (
                    position is None
                    or position.epoch != cursor.epoch
                    or position.offset > cursor.offset
                )
            ]
            if behind:
                await self._catch_up_many(behind)

    # -- acknowledgements ------------------------------------------------------------------

    async def request_ack(self, data: dict[str, Any]) -> None:
        """``ack {stream: "user", epoch, offset}``: the client has shown up to ``offset``."""
        if data.get("stream", protocol.STREAM_USER) != protocol.STREAM_USER:
            raise RequestError(protocol.INVALID_PAYLOAD, 'Only the "user" stream is acked.')
        position = position_field(data, "ack's data must be")
        stream = delivery.user_stream(self.user_key)
        cursor = self.cursors.get(stream)
        epoch, offset = position
        if cursor is None or cursor.epoch != epoch:
            return  # an older epoch's messages: nothing to acknowledge any more
        if offset > cursor.offset:
            raise RequestError(
                protocol.INVALID_PAYLOAD,
                f"Offset {offset} was not sent on this connection (last: {cursor.offset}).",
            )
        await get_backend().stream_ack(
            [(stream, self.user_key, epoch, offset, offset)], limits=delivery.limits()
        )
