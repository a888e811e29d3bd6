"""Availability from server code: states, statuses, connection data, server-set presence.

These methods are part of :data:`~django_presence.services.online.user_online_service`
(its class inherits :class:`AvailabilityService`); they live in their own module because
they are one subject. Every method has a sync and an async (``a``-prefixed) form.

What a user's state is and how it is derived: ``docs/presence-states.md``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from .. import groups, protocol, transitions
from ..availability import check_status, connection_data, data_dict
from ..backends import Availability, ConnectionData, get_backend
from ..conf import number_setting, presence_settings
from ..ids import check_connection_id, pk_from_key, user_key
from ..policies import ask, get_policy_class
from ..runtime import get_runtime

logger = logging.getLogger(__name__)

#: Names of server-set presences (``set_presence(name=...)``).
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
#: Connection ids of server-set presences start with this (a valid channel name).
SERVER_PRESENCE_PREFIX = "server-presence."
#: The longest a status may last: a year. A later expiry is no datetime (or no Redis TTL).
MAX_STATUS_SECONDS = 366 * 86400


@dataclass(frozen=True)
class Presence:
    """One user's availability, as :meth:`AvailabilityService.aget_presence` reads it.

    ``state`` is what other users see (``offline``, ``online``, ``away``, ``busy``);
    ``devices``, ``activities`` and ``status_text`` go with it. ``is_online`` is the
    server's truth (the user holds a connection, invisible or not) for server code and
    for the user themselves, and ``state != "offline"`` for other viewers. ``status``
    (``available``, ``busy``, ``invisible``) and ``connections`` (connection id ->
    ``{"device", "activity", "data"}``) are empty for a viewer who may not see details.
    Times are aware datetimes; ``last_seen`` is from the database copy (None while online,
    when no copy is kept, and for other viewers of an invisible user).
    """

    user_id: Any
    state: str
    is_online: bool
    devices: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    status_text: str = ""
    status: str = ""
    status_expires_at: datetime | None = None
    last_active: datetime | None = None
    last_seen: datetime | None = None
    seq: int = 0
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)


def _server_presence_id(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be 1 to 40 letters, digits, '_', '.' or '-', got {name!r}.")
    return SERVER_PRESENCE_PREFIX + name


class AvailabilityService:
    """States, statuses and presence data: the availability part of the presence service."""

    # -- async API -------------------------------------------------------------------------

    async def aset_status(
        self,
        user_id: Any,
        status: str,
        *,
        text: str = "",
        until: datetime | None = None,
        expires_in: float | None = None,
    ) -> None:
        """Set a user's status: ``available``, ``busy`` (do not disturb) or ``invisible``.

        ``text`` (at most ``STATUS_TEXT_MAX_LENGTH`` characters) goes with it; both last
        until ``until`` (an aware datetime) or for ``expires_in`` seconds, or until changed.
        Kept in the backend whether the user is online or not, across reconnects and
        restarts of web servers. An ``invisible`` user is shown offline to everyone else
        and still receives messages. The user's own connections get a ``status`` frame.
        Raises ``ValueError`` for a bad status, text or expiry (more than a year away).
        """
        ttl = expires_in
        if until is not None:
            ttl = (until - timezone.now()).total_seconds()
        await self._set_status(user_key(user_id), status, text, ttl)

    async def _set_status(
        self, key: str, status: Any, text: Any, ttl: float | None, *, origin: str = ""
    ) -> None:
        status, text = check_status(status, text)
        if ttl is not None and (isinstance(ttl, bool) or not ttl > 0):
            raise ValueError("The status must expire in the future.")
        if ttl is not None and not ttl <= MAX_STATUS_SECONDS:
            raise ValueError(f"A status lasts at most {MAX_STATUS_SECONDS} seconds (a year).")
        runtime = get_runtime()
        async with runtime.hold(key):
            change = await get_backend().set_status(key, status, text=text, ttl=ttl)
            applied = runtime.submit([change])
        await applied
        await _tell_own_connections(key, status, text, ttl, origin=origin)

    async def aset_connection_data(
        self,
        user_id: Any,
        connection_id: str,
        *,
        device: str = "",
        activity: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Replace one connection's device, activity and data in place (no leave and join).

        Watchers see the change of the user's devices and activities as one
        ``status_changed``. An activity in ``KEEP_PRESENT_ACTIVITIES`` keeps the user
        from turning away while it lasts. Raises ``ValueError`` for a value over its
        limit; an unknown connection changes nothing.
        """
        value = connection_data(device, activity, data)
        await self._set_data(user_key(user_id), check_connection_id(connection_id), value)

    async def _set_data(self, key: str, connection_id: str, value: ConnectionData) -> None:
        runtime = get_runtime()
        async with runtime.hold(key):
            change = await get_backend().set_connection_data(key, connection_id, value)
            applied = runtime.submit([change])
        await applied

    async def arecord_activity(self, user_id: Any) -> None:
        """Record that the user did something now (they are not away).

        Written to the backend at most once per user per ``ACTIVITY_WRITE_INTERVAL`` by
        this event loop; an away user's activity is written at once.
        """
        await get_runtime().note_activity(user_key(user_id))

    async def aset_presence(
        self,
        user_id: Any,
        *,
        ttl: float,
        name: str = "server",
        device: str = "",
        activity: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Hold the user online for ``ttl`` seconds without a socket (a rota, a push).

        A *server-set presence* named ``name``: a connection of the user that no socket
        holds and nobody renews, so the user goes offline ``ttl`` seconds later unless a
        socket of theirs is open or it is set again. Setting it again renews it;
        :meth:`aclear_presence` ends it at once. ``device``, ``activity`` and ``data``
        are as for a connection (``device="mobile"`` after a push registration).
        ``ttl`` is at most a year.
        """
        # "not 0 < ttl <= ..." also refuses NaN, which compares false with everything.
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not 0 < ttl <= MAX_STATUS_SECONDS
        ):
            raise ValueError(
                f"ttl must be a number of seconds > 0 and <= {MAX_STATUS_SECONDS}, got {ttl!r}."
            )
        value = connection_data(device, activity, data)
        key = user_key(user_id)
        runtime = get_runtime()
        async with runtime.hold(key):
            change = await get_backend().add_connection(
                key,
                _server_presence_id(name),
                ttl=ttl,
                data=value,
                idle=number_setting("IDLE_AFTER"),
            )
            applied = runtime.submit([change])
        await applied

    async def aclear_presence(self, user_id: Any, *, name: str = "server") -> None:
        """End the server-set presence ``name`` of the user now (no grace period)."""
        key = user_key(user_id)
        runtime = get_runtime()
        async with runtime.hold(key):
            change = await get_backend().remove_connection(key, _server_presence_id(name))
            applied = runtime.submit([change])
        await applied

    async def aget_presence(self, user_ids: Any, *, viewer: Any = None) -> dict[Any, Presence]:
        """The :class:`Presence` of each user, by primary key, in one backend round trip.

        ``viewer`` None is server code, which sees everything. With a viewer (a user),
        only the users the policy lets them watch (``can_watch``) are in the result, and
        they are shown as other users see them: an invisible user offline with no
        ``last_seen``, and devices, activities, status text, ``last_active`` and
        connections only when ``can_see_details`` allows (always for oneself).
        """
        pks = list(dict.fromkeys(user_ids))
        keys = {user_key(pk): pk for pk in pks}
        backend = get_backend()
        found = await backend.availability(list(keys))
        offset = time.time() - await backend.now()
        policy = get_policy_class()() if viewer is not None else None
        seen_raw = await transitions.last_seen([k for k, a in found.items() if not a.online])
        result: dict[Any, Presence] = {}
        for key, pk in keys.items():
            availability = found[key]
            seen = seen_raw.get(key)
            last_seen = datetime.fromisoformat(seen) if seen else None
            if policy is None or viewer.pk == pk_from_key(key):
                result[pk] = _full(pk, availability, offset, last_seen)
                continue
            if not await ask(policy, "can_watch", viewer, pk):
                continue
            details = await ask(policy, "can_see_details", viewer, pk)
            result[pk] = _as_seen(pk, availability, offset, last_seen, details=details)
        return result

    # -- sync API --------------------------------------------------------------------------

    def set_status(
        self,
        user_id: Any,
        status: str,
        *,
        text: str = "",
        until: datetime | None = None,
        expires_in: float | None = None,
    ) -> None:
        """Sync form of :meth:`aset_status`."""
        async_to_sync(self.aset_status)(
            user_id, status, text=text, until=until, expires_in=expires_in
        )

    def set_connection_data(
        self,
        user_id: Any,
        connection_id: str,
        *,
        device: str = "",
        activity: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Sync form of :meth:`aset_connection_data`."""
        async_to_sync(self.aset_connection_data)(
            user_id, connection_id, device=device, activity=activity, data=data
        )

    def set_presence(
        self,
        user_id: Any,
        *,
        ttl: float,
        name: str = "server",
        device: str = "",
        activity: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Sync form of :meth:`aset_presence`."""
        async_to_sync(self.aset_presence)(
            user_id, ttl=ttl, name=name, device=device, activity=activity, data=data
        )

    def clear_presence(self, user_id: Any, *, name: str = "server") -> None:
        """Sync form of :meth:`aclear_presence`."""
        async_to_sync(self.aclear_presence)(user_id, name=name)

    def get_presence(self, user_ids: Any, *, viewer: Any = None) -> dict[Any, Presence]:
        """Sync form of :meth:`aget_presence`."""
        return async_to_sync(self.aget_presence)(user_ids, viewer=viewer)


def _time(value: float | None, offset: float) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value + offset, tz=dt_timezone.utc)


def _full(pk: Any, a: Availability, offset: float, last_seen: datetime | None) -> Presence:
    return Presence(
        user_id=pk,
        state=a.presence.state if a.status != "invisible" else a.state,
        is_online=a.online,
        # From the connections: the public presence has none while the user is invisible.
        devices=_devices(a),
        activities=_activities(a),
        status_text=a.text,
        status=a.status,
        status_expires_at=_time(a.status_expires_at, offset),
        last_active=_time(a.last_active, offset),
        last_seen=last_seen,
        seq=a.seq,
        connections={cid: data_dict(d) for cid, d in a.connections.items()},
    )


def _devices(a: Availability) -> tuple[str, ...]:
    return tuple(sorted({d.device for d in a.connections.values() if d.device}))


def _activities(a: Availability) -> tuple[str, ...]:
    return tuple(sorted({d.activity for d in a.connections.values() if d.activity}))


def _as_seen(
    pk: Any, a: Availability, offset: float, last_seen: datetime | None, *, details: bool
) -> Presence:
    presence = a.presence
    invisible = a.status == "invisible"
    if not details:
        seen = None if invisible else last_seen
        return Presence(pk, presence.state, presence.online, seq=a.seq, last_seen=seen)
    return Presence(
        user_id=pk,
        state=presence.state,
        is_online=presence.online,
        devices=presence.devices,
        activities=presence.activities,
        status_text=presence.text,
        status="" if invisible else a.status,
        last_active=None if invisible else _time(a.last_active, offset),
        last_seen=None if invisible else last_seen,
        seq=a.seq,
        connections={} if invisible else {cid: data_dict(d) for cid, d in a.connections.items()},
    )


async def _tell_own_connections(
    key: str, status: str, text: str, ttl: float | None, *, origin: str
) -> None:
    """Send the user's ``ws/user/`` connections their new status (but ``origin``)."""
    layer = get_channel_layer(presence_settings.CHANNEL_LAYER)
    if layer is None:
        return
    try:
        await layer.group_send(
            groups.user_group(pk_from_key(key)),
            {
                "type": protocol.EVENT_OWN_STATUS,
                "status": status,
                "text": text,
                "expires_in": ttl,
                "origin": origin,
            },
        )
    except Exception:  # at-most-once like every layer message; the reply says it too
        logger.warning("Could not tell user %s's connections of their status", key, exc_info=True)
