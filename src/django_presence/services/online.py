"""Presence: :data:`user_online_service`, who is online, from anywhere in a project.

Every method has a sync and an async form, following Django's ``a`` prefix convention
(``is_user_online`` / ``ais_user_online``). Sync forms may be called from views,
management commands, Celery tasks and plain threads; from async code, await the ``a`` form.

The service is the public face of three layers below it: the backend decides every
transition (:mod:`~django_presence.backends`), the runtime of the calling event loop
orders and batches their side effects (:mod:`~django_presence.runtime`), and the
transition engine applies them (:mod:`~django_presence.transitions`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .. import protocol, transitions
from ..backends import OFFLINE, Change, ConnectionData, PublicPresence, get_backend
from ..conf import number_setting, presence_settings
from ..exceptions import TooManyConnections
from ..ids import SERVER_ID, check_connection_id, new_connection_id, user_key
from ..runtime import SWEEP_LIMIT, get_runtime
from ..transitions import ReconcileResult
from .availability import AvailabilityService, Presence

logger = logging.getLogger(__name__)

__all__ = [
    "SERVER_ID",
    "Presence",
    "PresenceState",
    "ReconcileResult",
    "UserOnlineService",
    "new_connection_id",
    "user_online_service",
]


@dataclass(frozen=True)
class PresenceState:
    """One user's presence as :meth:`UserOnlineService.aget_presence_state` reads it.

    ``seq`` is the user's last transition or presence change (0 when none is known);
    ``last_seen`` is when the user last went offline (ISO 8601, from the database copy),
    None while online, for users never seen, for an invisible user, or when no database
    copy is kept. ``is_online`` and ``presence`` are what other users see: an invisible
    user is offline.
    """

    is_online: bool
    seq: int
    last_seen: str | None = None
    presence: PublicPresence = OFFLINE


def _refuse_in_event_loop(method: str) -> None:
    """Refuse a blocking read from async code, as ``async_to_sync`` refuses the others."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"user_online_service.{method}() is sync and would block the event loop; from "
        f"async code, await user_online_service.a{method}() instead."
    )


class UserOnlineService(AvailabilityService):
    """Who is online, and the side effects of coming online and going offline.

    A user is online while they hold at least one unexpired connection lease in the
    backend, plus ``OFFLINE_GRACE_PERIOD`` after their last connection closed cleanly.
    What others see of them (online, away, busy, or offline when invisible), their
    status and their connections' data: the methods inherited from
    :class:`~django_presence.services.availability.AvailabilityService`.
    """

    # -- async API -------------------------------------------------------------------------

    async def aadd_user_connection(
        self,
        user_id: Any,
        connection_id: str | None = None,
        *,
        server: str | None = None,
        limit: int | None = None,
        data: ConnectionData | None = None,
    ) -> str:
        """Register a connection of ``user_id``; return its id (generated if not given).

        A connection the calling event loop's runtime tracks (as the consumer mixin's
        are) is filed under the runtime's lease, which its beat renews; any other one
        under ``server`` (default: this process's ``SERVER_ID``), whose lease lasts
        ``CONNECTION_TTL`` unless renewed (:meth:`aheartbeat`).

        With ``limit``, raise :class:`~django_presence.exceptions.TooManyConnections`
        (and register nothing) when the user already holds ``limit`` open connections on
        all servers; the check and the registration are one atomic backend step.
        ``data`` (from :func:`django_presence.availability.connection_data`) is the
        connection's device, activity and data from the start. Connecting counts as
        activity.
        """
        key = user_key(user_id)
        connection_id = new_connection_id() if connection_id is None else connection_id
        check_connection_id(connection_id)
        ttl = number_setting("CONNECTION_TTL", allow_zero=False)
        runtime = get_runtime()
        if server is None:
            server = runtime.server if connection_id in runtime.connections else SERVER_ID
        async with runtime.hold(key):
            change = await get_backend().add_connection(
                key,
                connection_id,
                ttl=ttl,
                server=server,
                limit=limit,
                data=data,
                idle=number_setting("IDLE_AFTER"),
            )
            applied = runtime.submit([change])
        await applied
        if change.refused:
            raise TooManyConnections(
                f"User {key} already holds {change.connection_count} open connections "
                f"(the limit is {limit})",
                reason="user",
                limit=limit or 0,
            )
        return connection_id

    async def aremove_user_connection(
        self, user_id: Any, connection_id: str, *, grace: float | None = None
    ) -> None:
        """Remove a connection. The user goes offline when it was their last one.

        ``grace`` defaults to ``OFFLINE_GRACE_PERIOD``: the user then stays online that
        long, and a reconnect within it causes no transition at all; otherwise this event
        loop's runtime sweeps the closing lease when it expires, so the user goes offline
        within about a second after the grace period.
        """
        key = user_key(user_id)
        check_connection_id(connection_id)
        if grace is None:
            grace = number_setting("OFFLINE_GRACE_PERIOD")
        runtime = get_runtime()
        async with runtime.hold(key):
            change = await get_backend().remove_connection(key, connection_id, grace=grace)
            applied = runtime.submit([change])
        # A closing lease kept: this loop sweeps it when it expires (prompt offline).
        runtime.connection_removed(change, grace)
        await applied

    async def ais_user_online(self, user_id: Any) -> bool:
        """Whether the user has a live connection (or is within the grace period)."""
        return await get_backend().is_online(user_key(user_id))

    async def aget_user_connection_count(self, user_id: Any) -> int:
        """How many connections the user has open now (grace periods not counted)."""
        return await get_backend().connection_count(user_key(user_id))

    async def acleanup_user_connections(self, user_id: Any) -> int:
        """Remove all of the user's connections with no grace; return how many there were.

        The user goes offline at once (DB, signals, watchers). Sockets that are still open
        register again on their next heartbeat; to close them, see the monitoring docs.
        """
        key = user_key(user_id)
        runtime = get_runtime()
        async with runtime.hold(key):
            removed, change = await get_backend().remove_user(key)
            applied = runtime.submit([change])
        await applied
        return removed

    async def aget_online_user_ids(self, user_ids: Iterable[Any]) -> set[Any]:
        """Which of ``user_ids`` are online, in one backend round trip.

        Returns the ids as they were given.
        """
        by_key = {user_key(user_id): user_id for user_id in user_ids}
        online = await get_backend().online_user_ids(by_key)
        return {by_key[key] for key in online}

    async def asweep(self) -> int:
        """Remove expired connections now and apply the offline transitions they cause.

        Server processes sweep on their own every ``HEARTBEAT_INTERVAL``; this is for
        management commands and tests. Returns how many connections were removed.
        """
        backend, removed = get_backend(), 0
        # Until nothing is left (a dead server's connections take one call per
        # SWEEP_LIMIT), a bounded number of calls.
        for _ in range(1000):
            result = await backend.sweep(limit=SWEEP_LIMIT)
            await get_runtime().submit(result.changes)
            removed += result.removed
            if not result.more:
                break
        return removed

    async def aheartbeat(self, connections: Sequence[tuple[Any, str]]) -> None:
        """Extend the leases of ``(user_id, connection_id)`` pairs in one round trip."""
        pairs = [(user_key(user_id), connection_id) for user_id, connection_id in connections]
        restored = await get_backend().heartbeat(
            pairs, ttl=number_setting("CONNECTION_TTL", allow_zero=False), server=SERVER_ID
        )
        await get_runtime().submit([change for _, change in restored])

    async def adisconnect_user(
        self, user_id: Any, *, code: int = protocol.CLOSE_DISCONNECTED
    ) -> int:
        """Close all of the user's sockets, on every server, and take them offline now.

        The sockets are closed with ``code`` (4010, ``protocol.CLOSE_DISCONNECTED``, by
        default) by the server processes holding them: each tracked connection is
        registered under its consumer's channel name, so the backend's record of it says
        where to send a ``presence.disconnect`` event. The user's presence is removed at
        once, with no grace period, so they are shown offline even if an event to a
        server is lost (channel-layer delivery is at most once). Without a channel layer,
        only the sockets of the calling event loop are closed. Called on logout and
        password change by default. A client that still holds a valid token may connect
        again: revoke the token too where that matters. Returns how many connections were
        registered.
        """
        key = user_key(user_id)
        layer = get_channel_layer(presence_settings.CHANNEL_LAYER)
        if layer is None:
            get_runtime().close_user(key, code)
        else:
            for connection in await get_backend().user_connections(key):
                if not connection.closing:
                    await _ask_to_close(layer, connection.connection_id, key, code)
        return await self.acleanup_user_connections(user_id)

    async def aget_presence_state(self, user_ids: Iterable[Any]) -> dict[str, PresenceState]:
        """The presence of many users, keyed by ``str(pk)``: state, last seq, last_seen.

        The online flags and seqs are read in one atomic backend step (a subscriber
        orders later ``status_changed`` events against them by ``seq``); ``last_seen``
        of the offline ones in one database query, when a database copy is kept.
        """
        keys = list(dict.fromkeys(user_key(user_id) for user_id in user_ids))
        found = await get_backend().availability(keys)
        # An invisible user's last_seen (when they really went offline) is theirs alone.
        offline = [
            key
            for key in keys
            if not found[key].presence.online and found[key].status != "invisible"
        ]
        seen = await transitions.last_seen(offline)
        return {
            key: PresenceState(
                found[key].presence.online,
                found[key].seq,
                last_seen=seen.get(key),
                presence=found[key].presence,
            )
            for key in keys
        }

    async def areconcile(
        self,
        *,
        batch_size: int = transitions.RECONCILE_BATCH,
        progress: Callable[[int, int], object] | None = None,
    ) -> ReconcileResult:
        """Make ``is_online`` agree with the backend, and announce what was repaired.

        A user whose row disagrees with the backend missed a transition's side effects
        (a process died between the backend's decision and its write, or the backend lost
        its data): the row is written and the transition announced (signal,
        ``status_changed``) as if the backend had just decided it. ``manage.py presence
        reconcile``, the admin's connection monitor and the runtime (after the backend
        lost data) all call this. ``progress(done, total)`` is called after each batch of
        ``batch_size`` users. Does nothing without a database copy (``STORE = None``,
        ``SYNC_USER_MODEL`` off, or a user model without the fields).
        """
        return await transitions.reconcile(batch_size=batch_size, progress=progress)

    # -- sync API --------------------------------------------------------------------------

    def add_user_connection(self, user_id: Any, connection_id: str | None = None) -> str:
        """Sync form of :meth:`aadd_user_connection`."""
        return async_to_sync(self.aadd_user_connection)(user_id, connection_id)

    def remove_user_connection(
        self, user_id: Any, connection_id: str, *, grace: float | None = None
    ) -> None:
        """Sync form of :meth:`aremove_user_connection`."""
        async_to_sync(self.aremove_user_connection)(user_id, connection_id, grace=grace)

    # The reads call the backend's blocking twins: no event loop and, on Redis, a client
    # shared by the process's threads, instead of a new loop and connection per call.

    def is_user_online(self, user_id: Any) -> bool:
        """Sync form of :meth:`ais_user_online`."""
        _refuse_in_event_loop("is_user_online")
        return get_backend().is_online_sync(user_key(user_id))

    def get_user_connection_count(self, user_id: Any) -> int:
        """Sync form of :meth:`aget_user_connection_count`."""
        _refuse_in_event_loop("get_user_connection_count")
        return get_backend().connection_count_sync(user_key(user_id))

    def cleanup_user_connections(self, user_id: Any) -> int:
        """Sync form of :meth:`acleanup_user_connections`."""
        return async_to_sync(self.acleanup_user_connections)(user_id)

    def get_online_user_ids(self, user_ids: Iterable[Any]) -> set[Any]:
        """Sync form of :meth:`aget_online_user_ids`."""
        _refuse_in_event_loop("get_online_user_ids")
        by_key = {user_key(user_id): user_id for user_id in user_ids}
        return {by_key[key] for key in get_backend().online_user_ids_sync(by_key)}

    def sweep(self) -> int:
        """Sync form of :meth:`asweep`."""
        return async_to_sync(self.asweep)()

    def disconnect_user(self, user_id: Any, *, code: int = protocol.CLOSE_DISCONNECTED) -> int:
        """Sync form of :meth:`adisconnect_user`."""
        return async_to_sync(self.adisconnect_user)(user_id, code=code)

    def reconcile(
        self,
        *,
        batch_size: int = transitions.RECONCILE_BATCH,
        progress: Callable[[int, int], object] | None = None,
    ) -> ReconcileResult:
        """Sync form of :meth:`areconcile`."""
        return async_to_sync(self.areconcile)(batch_size=batch_size, progress=progress)

    async def apply_changes(self, changes: Iterable[Change]) -> None:
        """Apply the side effects of backend transitions, in order; return when applied.

        For code that calls a backend directly (a custom backend's own sweeper, a data
        migration): the changes that are transitions get their database write, signal
        and ``status_changed``, exactly as the service's own calls do, batched with
        whatever else this event loop is applying.
        """
        await get_runtime().submit(changes)


async def _ask_to_close(layer: Any, channel: str, key: str, code: int) -> None:
    try:
        await layer.send(channel, {"type": protocol.EVENT_DISCONNECT, "code": code})
    except Exception:
        # A connection registered by hand (not by the mixin) has no channel, and the
        # layer may be down: its presence is removed all the same.
        logger.warning(
            "Could not ask connection %s of user %s to close", channel, key, exc_info=True
        )


#: The process-wide presence service.
user_online_service = UserOnlineService()
