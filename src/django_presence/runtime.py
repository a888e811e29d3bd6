"""The per-process runtime: everything one event loop holds for presence, in one place.

A server process serves its sockets from one event loop, and that loop has exactly one
:class:`Runtime` (:func:`get_runtime`). It holds:

- the **connections** this process has open (connection id -> user key) and the
  consumers serving them, which the runtime reaches through the typed
  :class:`TrackedConsumer` protocol only;
- the **group memberships** its ``ws/user/`` connections hold in client groups;
- the **per-user locks** and the **batcher** that apply the side effects of
  transitions (:mod:`~django_presence.transitions`) in the backend's order, a batch at
  a time (group commit): a :class:`~django_presence.batcher.Batcher`, reached through
  :meth:`Runtime.hold` and :meth:`Runtime.submit`;
- the **grace sweeps** (:mod:`~django_presence.grace_sweeps`): after a clean close left
  a user's last lease closing, one sweep when it expires, so that the user goes offline
  at the end of ``OFFLINE_GRACE_PERIOD`` rather than at the next beat;
- the **group settles** (:mod:`~django_presence.occupancy`): after a client group emptied,
  one check ``OFFLINE_GRACE_PERIOD`` later that announces ``group_emptied`` once;
- **one timer task**. Every ``HEARTBEAT_INTERVAL`` (at a fixed rate) it renews this
  runtime's lease, which every connection it registered shares (one request whatever
  their number), and sweeps everybody's expired ones, in one backend round trip; renews
  the group memberships and sweeps the expired ones of its groups; and re-reads the
  presence its subscribers watch, to make good a ``status_changed`` the channel layer
  lost. So the users of a crashed server go offline, and leave their groups, within
  ``CONNECTION_TTL + HEARTBEAT_INTERVAL``, without any cron job.

Nothing is shared between loops, and a finished loop frees its runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Collection, Iterable, Mapping
from typing import Any, Protocol

from . import delivery, metrics, occupancy, protocol, transitions
from .availability import ActivityTracker
from .backends import Change, MemberChange, PublicPresence, SweepResult, get_backend
from .batcher import Batcher
from .conf import number_setting
from .grace_sweeps import GraceSweeps, cancel_and_wait, kept_closing_lease
from .ids import SERVER_ID

logger = logging.getLogger(__name__)

#: Connections one sweep call examines at most: one Redis call of 2-5 ms (measured by
#: benchmarks/scale.py; issue 17 allows no call over 10 ms).
SWEEP_LIMIT = 250
#: Sweep calls one beat may make when more than SWEEP_LIMIT connections wait: a crashed
#: server holding up to 50,000 connections is swept within one beat.
MAX_SWEEPS_PER_BEAT = 200


class TrackedConsumer(Protocol):
    """What the runtime may call on a consumer it tracks.

    :class:`~django_presence.consumers.UserOnlineStatusMixin` implements all of it (the
    subscription and group hooks do nothing there); ``UserConsumer`` fills them in.
    """

    presence_user_id: Any

    def presence_close_for_server(self, code: int) -> None:
        """Close the socket with ``code``, from any task."""

    def presence_watched_user_keys(self) -> Collection[str]:
        """The keys of the users whose status this connection forwards to its client."""

    async def presence_resync(self, snapshot: Mapping[str, tuple[PublicPresence, int]]) -> None:
        """Catch up on transitions of watched users (``(online, seq)`` by key)."""

    async def presence_rejoin_groups(self) -> None:
        """Join this connection's channel-layer groups again (the layer lost them)."""

    def presence_streams(self) -> Collection[str]:
        """The backend names of the message streams this connection follows."""

    async def presence_check_streams(self, positions: Mapping[str, Any]) -> None:
        """Catch up on followed streams that moved on, or lost their history."""

    def get_presence_log_extra(self) -> dict[str, Any]:
        """The ``extra`` of this connection's log records."""


class _Connections(dict[str, str]):
    """Connection id -> user key, with its ``(user key, connection id)`` pairs cached.

    A beat of an idle server then allocates nothing per connection: building 10,000 pairs
    every beat made the garbage collector walk the whole heap every few beats.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pairs: list[tuple[str, str]] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """The ``(user key, connection id)`` pairs; the same list until a change."""
        if self._pairs is None:
            self._pairs = [(user, cid) for cid, user in self.items()]
        return self._pairs

    def __setitem__(self, key: str, value: str) -> None:
        self._pairs = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._pairs = None
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` (see :meth:`dict.pop`)."""
        self._pairs = None
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, str]:
        """Remove an item (see :meth:`dict.popitem`)."""
        self._pairs = None
        return super().popitem()

    def clear(self) -> None:
        """Remove every item."""
        self._pairs = None
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add items (see :meth:`dict.update`)."""
        self._pairs = None
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: str) -> str:
        """See :meth:`dict.setdefault`."""
        self._pairs = None
        return super().setdefault(key, default)


class LayerOutage:
    """How many of this loop's connections are retrying the channel layer now.

    Lets a layer outage log one WARNING when the first connection fails and one INFO when
    the last failing connection reached the layer again, instead of one WARNING per
    socket.
    """

    def __init__(self) -> None:
        self.failing = 0
        self.since = 0.0

    def begin(self) -> bool:
        """Count a connection that started failing; True if it is the first one."""
        self.failing += 1
        if self.failing == 1:
            self.since = time.monotonic()
            return True
        return False

    def end(self, recovered: bool) -> None:
        """Count a failing connection that reached the layer again (or ended)."""
        self.failing -= 1
        if self.failing == 0 and recovered:
            logger.info(
                "Channel layer available again after %.1f s",
                time.monotonic() - self.since,
                extra={"server": SERVER_ID},
            )


class Runtime:
    """What one event loop holds for presence, and its timer task (see the module)."""

    def __init__(self) -> None:
        #: The name this runtime registers its connections under: their lease is this
        #: name's (:meth:`~django_presence.backends.BasePresenceBackend.renew_server`).
        #: ``SERVER_ID`` and a random suffix, so that a new process that reuses a pid, or
        #: another event loop of this process, never shares it.
        self.server = f"{SERVER_ID}#{secrets.token_hex(3)}"
        #: Connection id -> user key of the connections this loop holds open.
        self.connections = _Connections()
        # File every connection again at the next beat (a registration failed), or retire
        # what is filed and file again (a removal failed: drop what is no longer held).
        self._refile = False
        self._rotate = False
        self._consumers: dict[str, weakref.ReferenceType[TrackedConsumer]] = {}
        #: ``(group, member id)`` -> user key of the client-group memberships held here.
        self.memberships: dict[tuple[str, str], str] = {}
        #: The channel layer's outage, as this loop's connections see it.
        self.layer_outage = LayerOutage()
        #: The per-user locks and the batcher of transitions' side effects.
        self.batcher = Batcher()
        #: The sweeps scheduled for when closing leases expire (prompt offline).
        # Given the batcher's submit, not this runtime's: no reference cycle, so that a
        # finished loop frees its runtime without waiting for the garbage collector.
        self.grace_sweeps = GraceSweeps(
            self.batcher.submit, limit=SWEEP_LIMIT, max_sweeps=MAX_SWEEPS_PER_BEAT
        )
        #: The settles scheduled for when emptied client groups' grace periods end.
        self.group_settles = occupancy.GroupSettles()
        self._timer: asyncio.Task[None] | None = None
        self._reconcile_task: asyncio.Task[None] | None = None
        #: ``(stream, user key)`` -> ``(epoch, offset)`` delivered since the last beat.
        self.delivered: dict[tuple[str, str], tuple[str, int]] = {}
        #: User activity reported by this loop's clients, written at most once per user
        #: per ``ACTIVITY_WRITE_INTERVAL`` (the rest at the next beat).
        self.activity = ActivityTracker()

    # -- connections and consumers ------------------------------------------------------------

    def track_connection(
        self, user_key: str, connection_id: str, consumer: TrackedConsumer | None = None
    ) -> None:
        """Keep a connection's lease alive from now on (and reach its consumer)."""
        self.connections[connection_id] = user_key
        if consumer is not None:
            self._consumers[connection_id] = weakref.ref(consumer)
        self._start_timer()

    def untrack_connection(self, connection_id: str) -> None:
        """Stop renewing a connection's lease (before removing it from the backend)."""
        self.connections.pop(connection_id, None)
        self._consumers.pop(connection_id, None)

    def registration_failed(self) -> None:
        """A tracked connection could not be registered: the next beat registers it."""
        self._refile = True

    def removal_failed(self) -> None:
        """A connection could not be removed from the backend.

        Its record outlives it under this runtime's lease: the next beat retires what
        the lease holds and files again what is open, so the sweep removes the rest.
        """
        self._rotate = True

    def consumers(self) -> list[TrackedConsumer]:
        """The live consumers of the connections tracked here."""
        found = (ref() for ref in list(self._consumers.values()))
        return [consumer for consumer in found if consumer is not None]

    def close_user(self, user_key: str, code: int = protocol.CLOSE_DISCONNECTED) -> int:
        """Close this loop's sockets of ``user_key`` with ``code``; return how many."""
        closing = [c for c in self.consumers() if str(c.presence_user_id) == user_key]
        for consumer in closing:
            consumer.presence_close_for_server(code)
        return len(closing)

    # -- group memberships --------------------------------------------------------------------

    def track_membership(self, group: str, user_key: str, member_id: str) -> None:
        """Keep a client-group membership's lease alive from now on."""
        self.memberships[(group, member_id)] = user_key
        self._start_timer()

    def untrack_membership(self, group: str, member_id: str) -> None:
        """Stop renewing a membership (before leaving the group in the backend)."""
        self.memberships.pop((group, member_id), None)

    async def member_changed(self, change: MemberChange) -> None:
        """Note what a room join, leave or expiry did, for the group's occupancy.

        A group that went from no user to some is announced occupied (``group_occupied``,
        once across processes); one left empty is settled ``OFFLINE_GRACE_PERIOD`` later
        (``group_emptied``, once; see :mod:`~django_presence.occupancy`).
        """
        await occupancy.member_changed(
            change, self.group_settles, number_setting("OFFLINE_GRACE_PERIOD")
        )

    def note_delivered(self, stream: str, user_key: str, epoch: str, offset: int) -> None:
        """Record that a stored message reached a client; written at the next beat."""
        seen = self.delivered.get((stream, user_key))
        if seen is None or seen[0] != epoch or seen[1] < offset:
            self.delivered[(stream, user_key)] = (epoch, offset)

    async def note_activity(self, user_key: str) -> None:
        """A client of ``user_key`` reports activity: written now, or at a later beat.

        At most one backend write per user per ``ACTIVITY_WRITE_INTERVAL`` from this
        loop, whatever its clients send; an away user's first activity is written at
        once (their last write is older than the interval).
        """
        if self.activity.note(user_key):
            await self.write_activity([(user_key, 0.0)])

    def note_activity_soon(self, user_key: str) -> None:
        """:meth:`note_activity` without waiting: a write, when due, runs in a task."""
        if self.activity.note(user_key):
            task = asyncio.get_running_loop().create_task(self.write_activity([(user_key, 0.0)]))
            task.add_done_callback(_log_activity_failure)

    async def write_activity(self, activity: list[tuple[str, float]]) -> None:
        """Write ``(user key, seconds ago)`` activity and apply the presence it changes."""
        changes = await get_backend().touch(activity, idle=number_setting("IDLE_AFTER"))
        await self.submit(changes)

    # -- transitions ----------------------------------------------------------------------------

    def hold(self, user_key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold ``user_key``'s lock while calling the backend (see :meth:`Batcher.hold`)."""
        return self.batcher.hold(user_key)

    def submit(self, changes: Iterable[Change]) -> Awaitable[None]:
        """Queue transitions for their side effects (see :meth:`Batcher.submit`)."""
        return self.batcher.submit(changes)

    def connection_removed(self, change: Change, grace: float) -> None:
        """Note what ``remove_connection(..., grace=grace)`` returned.

        When it kept a closing lease, sweep just after that lease expires, so that the
        user goes offline about ``grace`` seconds after the close rather than at the
        next beat (see :mod:`~django_presence.grace_sweeps`).
        """
        if kept_closing_lease(change, grace):
            self.grace_sweeps.schedule(change.user_id, grace)

    # -- the timer ------------------------------------------------------------------------------

    def _start_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._run())
            # The task refers to its loop: once it ends (the loop shuts down), let go of
            # it, so that the loop and this runtime can be freed.
            self._timer.add_done_callback(self._forget_timer)

    def _forget_timer(self, task: asyncio.Task[None]) -> None:
        if self._timer is task:
            self._timer = None

    @property
    def running(self) -> bool:
        """Whether the timer task is running."""
        return self._timer is not None and not self._timer.done()

    async def stop(self, *, forget: bool = True) -> None:
        """Stop the timer tasks; with ``forget``, forget every connection and membership.

        What a process that stops serving does (and what tests use to play a crash: the
        leases are left in the backend to expire).
        """
        if forget:
            self.connections.clear()
            self._consumers.clear()
            self.memberships.clear()
        await self.grace_sweeps.stop()
        await self.group_settles.stop()
        await cancel_and_wait(
            task for task in (self._timer, self._reconcile_task) if task is not None
        )
        self._timer = self._reconcile_task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            # A fixed rate: a slow beat (DB writes after a big crash) does not push the next
            # one back, so sweeps stay one interval apart and the offline bound holds. A
            # beat longer than the interval is followed at once, never by a burst.
            interval = number_setting("HEARTBEAT_INTERVAL", allow_zero=False)
            next_beat = max(next_beat + interval, loop.time())
            await asyncio.sleep(next_beat - loop.time())
            try:
                await self.beat()
            except Exception:
                # The backend unreachable, the DB down...: every step is retried at the
                # next beat, and leases outlive a few missed ones.
                metrics.increment("heartbeat_failures")
                logger.exception(
                    "Presence heartbeat failed (%d connections); retrying in one interval",
                    len(self.connections),
                    extra={"server": SERVER_ID, "connections": len(self.connections)},
                )

    async def beat(self) -> None:
        """One beat: leases and sweep, memberships, subscribers' resync, message streams."""
        swept = await self._beat_connections()
        due = self.activity.due()
        if due:
            await self.write_activity(due)
        if self.memberships:
            await self._beat_memberships()
        await self._resync_watchers()
        delivered, self.delivered = self.delivered, {}
        # The process that swept this interval (one, under the sweep lock) also hands
        # over the undelivered messages: one request per interval for all servers.
        await delivery.beat(self.consumers(), delivered, hand_over=swept)

    async def _beat_connections(self) -> bool:
        """Renew this runtime's lease and sweep, in one backend round trip; True if swept.

        When the backend did not hold the lease (the first beat, a lease that expired
        during a long pause and was swept, a Redis restart) or a registration failed,
        every connection held here is filed again: one more round trip.
        """
        backend = get_backend()
        interval = number_setting("HEARTBEAT_INTERVAL", allow_zero=False)
        ttl = number_setting("CONNECTION_TTL", allow_zero=False)
        held, result = await backend.renew_server_and_sweep(
            self.server,
            ttl=ttl,
            rotate=self._rotate,
            limit=SWEEP_LIMIT,
            lock_ttl=interval * 0.9,
        )
        # Until the connections are filed again, the next beat files them (the lease is
        # confirmed now, so the backend would not ask again).
        self._rotate, self._refile = False, self._refile or not held
        restored: list[tuple[str, Change]] = []
        if self._refile:
            restored = await backend.heartbeat(
                self.connections.pairs(), ttl=ttl, server=self.server
            )
            self._refile = False
        changes = [change for _, change in restored]
        # Connections still open here that the backend had lost: evidence of data loss (a
        # Redis restart), unlike one closed while this beat was under way.
        lost = [cid for cid, _ in restored if cid in self.connections]
        if lost:
            metrics.increment("connections_restored", len(lost))
            logger.warning(
                "The presence backend had lost %d open connections of this server (a Redis "
                "restart, or this server's lease expired during a pause); registered them "
                "again",
                len(lost),
                extra={"server": SERVER_ID, "connections": len(lost)},
            )
        # A connection closed while the heartbeat was under way was stored again: undo.
        for connection_id, change in restored:
            if connection_id not in self.connections:
                grace = number_setting("OFFLINE_GRACE_PERIOD")
                undone = await backend.remove_connection(
                    change.user_id, connection_id, grace=grace
                )
                self.connection_removed(undone, grace)
                changes.append(undone)
        await self.submit(changes)
        if lost:
            await self._after_data_loss()
        sweeps = [result]
        # Each call's changes are queued as it returns: the users it took offline get
        # their DB write and events while the next calls sweep (a crash of a process with
        # 20,000 connections is 80 calls).
        applied = [self.submit(result.changes)]
        # More expired leases than one sweep takes (a big server crashed), or as many users
        # turning away as it takes (many went idle together): keep going now rather than
        # one interval later, a bounded number of times.
        # Each call renews this process's lease too (no extra round trip): a long run of
        # calls (a starved CPU) must not let the lease expire and be swept, by this very
        # loop or by another process, taking users still connected here offline.
        while _sweep_was_full(result) and len(sweeps) < MAX_SWEEPS_PER_BEAT:
            held, result = await backend.renew_server_and_sweep(
                self.server, ttl=ttl, limit=SWEEP_LIMIT
            )
            self._refile = self._refile or not held
            sweeps.append(result)
            applied.append(self.submit(result.changes))
        removed = sum(r.removed for r in sweeps)
        # OFFLINE transitions, and presence changes (away, a status that expired).
        swept_changes = [change for r in sweeps for change in r.changes]
        offline = [change for change in swept_changes if change.changed]
        ran = sum(1 for r in sweeps if r.swept)
        if ran:
            metrics.increment("sweeps", ran)
        if removed:
            metrics.increment("connections_swept", removed)
            logger.info(
                "Swept %d expired connections; %d users went offline",
                removed,
                len(offline),
                extra={"server": SERVER_ID, "removed": removed, "offline": len(offline)},
            )
        elif ran:
            logger.debug("Swept: no expired connections", extra={"server": SERVER_ID})
        await self._wait_renewing(applied, ttl=ttl, interval=interval)
        return bool(ran)

    async def _wait_renewing(
        self, applied: list[Awaitable[None]], *, ttl: float, interval: float
    ) -> None:
        """Wait for the side effects of this beat's sweeps, renewing the lease meanwhile.

        A big crash's transitions (DB writes, signal receivers, watchers' events) may take
        longer to apply than the lease lasts; renewed every ``interval`` while they do,
        the lease never expires under this process's own users.
        """
        futures = [asyncio.ensure_future(done) for done in applied]
        # (Usually all done already: no wait, no timer.)
        waiting = {future for future in futures if not future.done()}
        while waiting:
            _, waiting = await asyncio.wait(waiting, timeout=interval)
            if waiting:
                held = await get_backend().renew_server(self.server, ttl=ttl)
                self._refile = self._refile or not held
        for future in futures:
            await future  # done by now: raises what applying raised

    async def _beat_memberships(self) -> None:
        """Renew the memberships held here, then sweep and announce their groups' expired."""
        backend = get_backend()
        held = [(group, user, mid) for (group, mid), user in self.memberships.items()]
        await backend.room_refresh(held, ttl=number_setting("CONNECTION_TTL", allow_zero=False))
        for change in await backend.room_sweep({group for group, _, _ in held}):
            await transitions.announce_member_change(change)
            await self.member_changed(change)

    async def _resync_watchers(self) -> None:
        """Catch up subscribers on transitions whose status_changed the layer dropped."""
        watchers = [c for c in self.consumers() if c.presence_watched_user_keys()]
        if not watchers:
            return
        keys: set[str] = set()
        for consumer in watchers:
            keys.update(consumer.presence_watched_user_keys())
        found = await get_backend().availability(sorted(keys))
        snapshot = {key: (a.presence, a.seq) for key, a in found.items()}
        for consumer in watchers:
            await consumer.presence_resync(snapshot)

    async def _after_data_loss(self) -> None:
        """The backend lost data: rejoin channel-layer groups, and reconcile is_online."""
        for consumer in self.consumers():
            try:
                await consumer.presence_rejoin_groups()
            except Exception:
                # The layer may be down too: that connection retries on its own when
                # its receive fails (UserConsumer's outage handling).
                logger.exception(
                    "Could not rejoin channel-layer groups",
                    extra=consumer.get_presence_log_extra(),
                )
        # Every other server registers its connections again at its own next beat:
        # reconcile only after all of them had one, or live users would be marked offline.
        delay = 1.5 * number_setting("HEARTBEAT_INTERVAL", allow_zero=False)
        self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile(delay))

    async def _reconcile(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await transitions.reconcile()
        except Exception:
            # The DB or the backend failed: the next data loss, or an operator's
            # `manage.py presence reconcile`, tries again.
            logger.exception(
                "Could not reconcile is_online after the backend lost data",
                extra={"server": SERVER_ID},
            )


_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = (
    weakref.WeakKeyDictionary()
)


def _log_activity_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("Could not write a user's activity", exc_info=task.exception())


def _sweep_was_full(result: SweepResult) -> bool:
    """Whether a sweep took as much as it may: more may be waiting."""
    derived = sum(1 for change in result.changes if not change.changed)
    return result.more or result.removed >= SWEEP_LIMIT or derived >= SWEEP_LIMIT


def get_runtime() -> Runtime:
    """The runtime of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = _runtimes[loop] = Runtime()
    return runtime
