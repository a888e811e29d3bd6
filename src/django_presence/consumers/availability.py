"""The ``ws/user/`` requests that set availability: activity, presence data, status.

- ``activity {}``: the user did something (the JS client sends it, throttled, on input,
  focus and a visible page); the runtime writes it at most once per user per
  ``ACTIVITY_WRITE_INTERVAL``.
- ``set_presence {device?, activity?, data?}``: this connection's data, replaced in place
  (an omitted field keeps its value, ``null`` clears it). At most
  ``PRESENCE_UPDATE_RATE`` updates per ``PRESENCE_UPDATE_PERIOD`` reach the backend;
  more are merged into one that is written as soon as allowed, never refused.
- ``set_status {status, text?, expires_in?}``: the user's status, for all their
  connections; the reply is a ``status`` frame, which their other connections get too.

The connection's data is kept here and written again by the backend's reconnect rules
(a reconnect within the grace period inherits it; the JS client sends it again after a
longer one).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .. import protocol
from ..availability import AvailabilityError, connection_data, data_dict
from ..backends import get_backend
from ..conf import number_setting
from ..ratelimit import TokenBucket
from ..services.availability import MAX_STATUS_SECONDS
from ..services.online import user_online_service
from .frames import RequestError

logger = logging.getLogger(__name__)

#: The fields of ``set_presence``.
PRESENCE_FIELDS = ("device", "activity", "data")


class AvailabilityMixin:
    """Handles ``activity``, ``set_presence`` and ``set_status`` for ``UserConsumer``."""

    user_key: str
    channel_name: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: This connection's device, activity and data, as last set by its client.
        self.presence_fields: dict[str, Any] = {"device": "", "activity": "", "data": None}
        self._presence_bucket: TokenBucket | None = None
        self._presence_flush: asyncio.TimerHandle | None = None
        self._presence_dirty = False
        self._presence_set = False

    def _update_bucket(self) -> TokenBucket:
        if self._presence_bucket is None:
            rate = number_setting("PRESENCE_UPDATE_RATE", minimum=1)
            period = number_setting("PRESENCE_UPDATE_PERIOD", allow_zero=False)
            self._presence_bucket = TokenBucket(rate / period, rate)
        return self._presence_bucket

    async def request_activity(self, data: dict[str, Any]) -> None:
        """``activity {}``: the user is active (not away)."""
        await user_online_service.arecord_activity(self.user_key)

    async def request_set_presence(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``set_presence {device?, activity?, data?}`` -> ``ack {request, deferred}``.

        ``deferred`` is True when the update was merged into one written later (the
        connection is over ``PRESENCE_UPDATE_RATE``).
        """
        unknown = sorted(set(data) - set(PRESENCE_FIELDS))
        if unknown:
            raise RequestError(
                protocol.INVALID_PAYLOAD,
                f"set_presence takes {', '.join(PRESENCE_FIELDS)}; got {unknown[0][:40]!r}.",
            )
        if not self._presence_set:
            # The first update starts from what the connection registered with (its
            # ``?device=``), so that setting an activity keeps the device; or, for a
            # reconnect within the grace period, from the data it inherited from the
            # closing lease (one backend read, once per connection).
            initial = getattr(self, "presence_initial_data", None)
            if initial is None and self.presence_connection_id is not None:
                found = await get_backend().availability([self.user_key])
                initial = found[self.user_key].connections.get(self.presence_connection_id)
            self._presence_set = True
            if initial is not None:
                self.presence_fields = data_dict(initial)
                self.presence_fields["data"] = self.presence_fields["data"] or None
        fields = {**self.presence_fields, **data}
        try:
            connection_data(**fields)
        except AvailabilityError as e:
            code = protocol.TOO_LARGE if "limited" in str(e) else protocol.INVALID_PAYLOAD
            raise RequestError(code, str(e)) from None
        self.presence_fields = fields
        self._presence_dirty = True
        if self._presence_flush is None and self._update_bucket().take():
            await self._write_presence()
            return protocol.ACK, {"request": "set_presence", "deferred": False}
        self._schedule_presence_flush()
        return protocol.ACK, {"request": "set_presence", "deferred": True}

    def _schedule_presence_flush(self) -> None:
        if self._presence_flush is not None:
            return
        bucket = self._update_bucket()
        delay = max(0.0, (1 - bucket.tokens) / bucket.rate)
        loop = asyncio.get_running_loop()
        self._presence_flush = loop.call_later(delay, self._flush_presence_soon)

    def _flush_presence_soon(self) -> None:
        self._presence_flush = None
        if not self._update_bucket().take():
            self._schedule_presence_flush()
            return
        task = asyncio.get_running_loop().create_task(self._write_presence())
        task.add_done_callback(_log_failure)

    async def _write_presence(self) -> None:
        if not self._presence_dirty or self.presence_connection_id is None:
            return
        self._presence_dirty = False
        await user_online_service.aset_connection_data(
            self.user_key, self.presence_connection_id, **self.presence_fields
        )

    def cancel_presence_flush(self) -> None:
        """Drop a merged update not yet written (the connection is closing)."""
        if self._presence_flush is not None:
            self._presence_flush.cancel()
            self._presence_flush = None

    async def request_set_status(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``set_status {status, text?, expires_in?}`` -> ``status {status, text, expires_in}``."""
        expires_in = data.get("expires_in")
        if expires_in is not None and (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not 0 < expires_in <= MAX_STATUS_SECONDS
        ):
            raise RequestError(
                protocol.INVALID_PAYLOAD,
                f"data.expires_in must be a number of seconds > 0 and <= {MAX_STATUS_SECONDS}.",
            )
        # null is no text; any other value that is not a string is refused (not "").
        status, text = data.get("status"), data.get("text")
        text = "" if text is None else text
        try:
            await user_online_service._set_status(
                self.user_key, status, text, expires_in, origin=self.channel_name
            )
        except AvailabilityError as e:
            code = protocol.TOO_LARGE if "limited" in str(e) else protocol.INVALID_PAYLOAD
            raise RequestError(code, str(e)) from None
        return protocol.STATUS, {"status": status, "text": text, "expires_in": expires_in}

    async def presence_own_status(self, event: dict[str, Any]) -> None:
        """The user's status changed elsewhere -> ``status {status, text, expires_in}``."""
        if event.get("origin") == self.channel_name:
            return  # the connection that set it got the reply
        fields = {k: event.get(k) for k in ("status", "text", "expires_in")}
        await self.send_frame(protocol.STATUS, fields)  # type: ignore[attr-defined]

    presence_connection_id: str | None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("Could not write a merged presence update", exc_info=task.exception())
