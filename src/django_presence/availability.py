"""Availability: what a user's state is made of, checked once, and shown to whom.

The backend derives each user's state (``docs/presence-states.md``); this module is the
engine's side of it:

- the checks of what a client or server code sets: a connection's device, activity and
  data (:func:`connection_data`), a status and its text (:func:`check_status`);
- what a watcher is shown of a user's public presence (:func:`presence_fields`): the
  state always, devices, activities and the status text when the policy lets them see
  details;
- :class:`ActivityTracker`, held by each runtime: records user activity as it arrives
  and writes it to the backend at most once per user per ``ACTIVITY_WRITE_INTERVAL``
  (a user who was quiet longer than that is written at once, so an away user comes back
  without delay); the rest is written at the next beat.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .backends import STATUSES, ConnectionData, PublicPresence
from .conf import number_setting, valid_setting
from .ids import encodable


class AvailabilityError(ValueError):
    """A device, activity, data dict, status or text that cannot be stored."""


def _short_text(value: Any, name: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AvailabilityError(f"{name} must be a string, got {type(value).__name__}.")
    if len(value) > limit:
        raise AvailabilityError(f"{name} is limited to {limit} characters.")
    if not encodable(value) or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise AvailabilityError(f"{name} must be printable Unicode text.")
    return value


def keeps_present(activity: str) -> bool:
    """Whether ``activity`` keeps its user from turning away (``KEEP_PRESENT_ACTIVITIES``)."""
    kept: frozenset[str] = valid_setting("KEEP_PRESENT_ACTIVITIES")
    return activity in kept


def connection_data(device: Any = "", activity: Any = "", data: Any = None) -> ConnectionData:
    """A connection's data from what a client or server code gave, checked.

    ``device`` and ``activity`` are strings (at most ``DEVICE_MAX_LENGTH`` and
    ``ACTIVITY_MAX_LENGTH`` characters, printable; ``None`` or "" for none); ``data`` a
    dict of at most ``PRESENCE_DATA_MAX_KEYS`` keys and ``PRESENCE_DATA_MAX_BYTES`` bytes
    as compact JSON, or None. Raises :class:`AvailabilityError` saying what is wrong.
    """
    device = _short_text(device, "device", int(number_setting("DEVICE_MAX_LENGTH", minimum=1)))
    activity = _short_text(
        activity, "activity", int(number_setting("ACTIVITY_MAX_LENGTH", minimum=1))
    )
    text = ""
    if data is not None:
        if not isinstance(data, dict):
            raise AvailabilityError("data must be a JSON object.")
        keys = int(number_setting("PRESENCE_DATA_MAX_KEYS"))
        if len(data) > keys:
            raise AvailabilityError(f"data is limited to {keys} keys.")
        try:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            raise AvailabilityError("data must hold JSON values only.") from None
        if not encodable(text):
            raise AvailabilityError("data must hold printable Unicode text only.")
        size = int(number_setting("PRESENCE_DATA_MAX_BYTES"))
        if len(text.encode()) > size:
            raise AvailabilityError(f"data is limited to {size} bytes as compact JSON.")
        if text == "{}":
            text = ""
    return ConnectionData(device, activity, text, bool(activity) and keeps_present(activity))


def data_dict(data: ConnectionData) -> dict[str, Any]:
    """``{"device", "activity", "data"}`` of a stored connection's data, for people and JSON."""
    return {
        "device": data.device,
        "activity": data.activity,
        "data": json.loads(data.data) if data.data else {},
    }


def check_status(status: Any, text: Any = "") -> tuple[str, str]:
    """``(status, text)`` if ``status`` is one of ``STATUSES`` and ``text`` fits, else raise."""
    if status not in STATUSES:
        raise AvailabilityError(
            f"status must be one of {', '.join(STATUSES)}, got {status!r:.40}."
        )
    limit = int(number_setting("STATUS_TEXT_MAX_LENGTH"))
    return status, _short_text(text, "text", limit)


def presence_fields(presence: PublicPresence, *, details: bool) -> dict[str, Any]:
    """The wire fields of a public presence, as a watcher is allowed to see it.

    ``state`` always; ``devices``, ``activities`` and ``status_text`` only with
    ``details`` (the policy's ``can_see_details``).
    """
    fields: dict[str, Any] = {"state": presence.state}
    if details:
        fields["devices"] = list(presence.devices)
        fields["activities"] = list(presence.activities)
        fields["status_text"] = presence.text
    return fields


def seen_as(presence: PublicPresence, *, details: bool) -> PublicPresence:
    """``presence`` with what a watcher may not see emptied (for de-duplication)."""
    return presence if details else PublicPresence(presence.state)


class ActivityTracker:
    """User activity seen by one runtime, written at most once per user per interval.

    :meth:`note` says whether to write now (the user's last write is older than
    ``ACTIVITY_WRITE_INTERVAL``); otherwise the activity waits for :meth:`due`, called
    at each beat, which returns what to write then as ``(user key, seconds ago)``.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._written: dict[str, float] = {}  # user key -> when last written
        self._pending: dict[str, float] = {}  # user key -> latest activity not written

    def note(self, user_key: str) -> bool:
        """Record activity of ``user_key`` now; True when the caller must write it now.

        Now only after a quiet spell (no write within the interval and nothing waiting):
        the first activity of a user who may be away. Activity of a user who is active
        anyway waits for the beat, which writes every such user in one request.
        """
        now = self._clock()
        interval = number_setting("ACTIVITY_WRITE_INTERVAL")
        last = self._written.get(user_key)
        if user_key not in self._pending and (last is None or now - last >= interval):
            self._written[user_key] = now
            self._pending.pop(user_key, None)
            return True
        self._pending[user_key] = now
        return False

    def due(self) -> list[tuple[str, float]]:
        """The pending activity whose interval passed: ``(user key, seconds ago)`` pairs."""
        now = self._clock()
        interval = number_setting("ACTIVITY_WRITE_INTERVAL")
        due = []
        for key, when in list(self._pending.items()):
            if now - self._written.get(key, 0.0) >= interval:
                due.append((key, now - when))
                self._written[key] = now
                del self._pending[key]
        # A write older than the interval no longer holds anything back: forget it, so
        # that the tracker keeps only the users active within the last interval.
        for key in [k for k, t in self._written.items() if now - t >= interval]:
            if key not in self._pending:
                del self._written[key]
        return due

    def __len__(self) -> int:
        return len(self._written)
