"""The contract every presence backend implements.

A backend stores one *lease* per connection, or per server process for the connections
filed under it, and decides every user-level transition atomically: each mutating call
returns what changed for the user, and nothing outside the backend infers a transition
from a count it read earlier. It also stores the members of each client group ("room"),
with the same kind of leases and atomic decisions. Backends know nothing of Django
models, consumers or the channel layer.

Times are seconds (floats). Leases are measured on the backend's own clock (Redis server
time for :class:`~django_presence.backends.redis.RedisBackend`), never on each web server's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync


class Transition(enum.Enum):
    """What a backend operation did to a user's presence."""

    NONE = "none"
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Change:
    """The result of one mutating backend call for one user.

    ``seq`` increases with every transition the backend decides (for all users), so that
    receivers can order transitions that reach them by different paths; it is 0 when
    ``transition`` is :attr:`Transition.NONE`. ``connection_count`` is the number of open
    connections of the user after the call (leases kept only for a grace period are not
    counted). ``refused`` is True when :meth:`BasePresenceBackend.add_connection` stored
    nothing because the user already held ``limit`` open connections.

    ``presence`` is set when the call changed what other users see of the user (their
    state, devices or activities; see :class:`PublicPresence`): ``seq`` is then that
    change's, shared with the transition when there is one. ``hidden`` is True when the
    user is invisible: their transition is real (``user_online`` and ``is_online`` keep
    their meaning) but nobody else is told of it. The presence changes that
    :meth:`BasePresenceBackend.sweep` and :meth:`BasePresenceBackend.touch` return have
    ``connection_count`` 0 (they count nothing).
    """

    user_id: str
    transition: Transition
    connection_count: int
    seq: int = 0
    refused: bool = False
    presence: PublicPresence | None = None
    hidden: bool = False

    @property
    def changed(self) -> bool:
        """True when the user came online or went offline."""
        return self.transition is not Transition.NONE

    @property
    def announces(self) -> bool:
        """True when there is something to apply: a transition or a new public presence."""
        return self.transition is not Transition.NONE or self.presence is not None


#: The states a user can be in, as other users see them (``PublicPresence.state``).
STATES: tuple[str, ...] = ("offline", "online", "away", "busy")
#: The statuses a user can set (``set_status``): "available" is the default, stored as
#: nothing; "busy" is do-not-disturb; "invisible" shows the user offline to everyone else.
STATUSES: tuple[str, ...] = ("available", "busy", "invisible")


@dataclass(frozen=True)
class ConnectionData:
    """What one connection says of itself, updated in place (no leave and join).

    ``device`` is a short string (``web``, ``mobile``, ``desktop``...), ``activity`` what
    the user does on it (``in_call``, ``waiting_room``, ``viewing:/page``...), ``data`` a
    JSON object's text, opaque to the backend ("" for none). ``keep_present`` marks an
    activity that keeps the user from turning away while it lasts.
    """

    device: str = ""
    activity: str = ""
    data: str = ""
    keep_present: bool = False

    # Backends may rely on ``device``, ``activity`` and status texts being printable
    # (no control characters: the Redis backend separates them with \x1e and \x1f);
    # django_presence.availability.connection_data() and check_status() make sure.


@dataclass(frozen=True)
class PublicPresence:
    """What other users see of a user: a state, and the user's devices and activities.

    ``state`` is one of :data:`STATES`, derived by the backend (``docs/presence-states.md``):
    ``offline`` without a lease or while the user is invisible; else ``busy`` when they set
    it; else ``away`` when no connection of theirs was active for ``IDLE_AFTER`` and none
    has an activity that keeps them present; else ``online``. ``devices`` and
    ``activities`` are the distinct non-empty values of the user's connections, sorted,
    and ``text`` the status text the user set (all empty when the state is ``offline``).
    """

    state: str
    devices: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    text: str = ""

    @property
    def online(self) -> bool:
        """Whether others see the user online (any state but ``offline``)."""
        return self.state != "offline"


OFFLINE = PublicPresence("offline")


@dataclass(frozen=True)
class Availability:
    """Everything the backend holds of one user's availability, read in one step.

    ``online`` is the server's truth (the user holds a lease, invisible or not);
    ``presence`` what other users see; ``state`` what the user sees of themselves (as
    ``presence.state``, but an invisible user's real state). ``seq`` is the seq of the
    user's last transition or presence change (0: none kept). Times are on the backend's
    clock (:meth:`BasePresenceBackend.now`); ``last_active`` is None until an activity
    was recorded. ``connections`` maps the user's connection ids (open and closing) to
    their data.
    """

    user_id: str
    online: bool
    seq: int
    presence: PublicPresence
    state: str
    status: str = "available"
    text: str = ""
    status_expires_at: float | None = None
    last_active: float | None = None
    connections: dict[str, ConnectionData] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep removed: ``removed`` connections and the users they took offline.

    ``more`` is True when the sweep stopped at its ``limit`` with more expired or retired
    connections waiting: the caller may sweep again at once.
    """

    removed: int = 0
    changes: tuple[Change, ...] = ()
    swept: bool = True  # False when another process held the sweep lock.
    more: bool = False


@dataclass(frozen=True)
class MemberChange:
    """What one room join, leave or expiry did to a group.

    ``changed`` is True when the user joined or left the group as a user (their first
    membership joined or their last left); ``count_before`` and ``count`` are the group's
    user counts around the call, ``version`` the group's version after it.
    """

    group: str
    user_id: str
    joined: bool
    changed: bool
    count_before: int
    count: int
    version: int


@dataclass(frozen=True)
class ConnectionInfo:
    """One stored connection, for monitoring."""

    user_id: str
    connection_id: str
    opened_at: float
    expires_at: float
    closing: bool = False
    server: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamLimits:
    """How much history a stream keeps (from the ``HISTORY_*`` settings).

    ``size`` entries at most, none older than ``ttl`` seconds; the stream's epoch and
    latest offset are remembered ``meta_ttl`` seconds after its last publication, so a
    client that saw the latest message of a quiet stream still recovers (with nothing to
    replay) after its history expired.
    """

    size: int = 300
    ttl: float = 86400.0
    meta_ttl: float = 604800.0


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stands: its ``epoch`` and the ``offset`` of its latest entry.

    Offsets start at 1 and increase by one per publication. The epoch is a short string
    that changes when the stream's history was lost (the store restarted empty, or the
    stream was quiet for longer than ``meta_ttl``); offsets are comparable only within
    one epoch. ``offset`` 0 means nothing was published in this epoch yet.
    """

    epoch: str
    offset: int


@dataclass(frozen=True)
class StreamEntry:
    """One stored publication: its offset, its payload as published, when (backend clock)."""

    offset: int
    payload: str
    time: float


@dataclass(frozen=True)
class StreamRead:
    """What :meth:`BasePresenceBackend.stream_read` found for one stream.

    ``entries`` are the stored publications after the reader's offset, oldest first.
    ``recovered`` is True when they are *all* the publications the reader missed: the
    epoch is the reader's and nothing after its offset was trimmed. When it is False the
    reader has a gap it cannot fill (``entries`` holds whatever is still stored, which may
    be nothing) and must be told so.
    """

    stream: str
    epoch: str
    offset: int
    entries: tuple[StreamEntry, ...] = ()
    recovered: bool = True


@dataclass(frozen=True)
class StreamCursor:
    """A user's place in a stream: the stream's position, and what they got and acked.

    ``delivered`` is the highest offset a connection of the user was sent, ``acked`` the
    highest one a client acknowledged (both 0 when none, and both in ``epoch``).
    """

    epoch: str
    offset: int
    delivered: int = 0
    acked: int = 0


@dataclass(frozen=True)
class Undelivered:
    """A tracked publication that its user did not acknowledge before its deadline.

    ``payload`` is None when the stream no longer holds it (trimmed before the deadline).
    """

    stream: str
    user_id: str
    epoch: str
    offset: int
    payload: str | None
    time: float


def check_retention(value: Any) -> float:
    """Validate a backend's ``transition_retention`` option (seconds, >= 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(
            "transition_retention must be a number of seconds >= 0 (BACKEND_OPTIONS), "
            f"got {value!r}."
        )
    return float(value)


class BasePresenceBackend:
    """Base class of presence backends; subclass it to write your own.

    Every method is a coroutine, except the four blocking reads (``*_sync``) that sync
    callers use; those have working defaults. Subclasses must implement every coroutine;
    the base class raises :class:`NotImplementedError` naming the subclass. Run the
    contract suite in ``tests/test_backend_contract.py`` against a new backend to check it
    behaves like the shipped ones.

    User and connection ids are strings. The service layer converts user primary keys.
    """

    #: Whether several server processes share this backend's state.
    shared_across_processes: bool = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(
                f"{type(self).__name__} got unexpected options {sorted(options)!r}; check "
                "DJANGO_PRESENCE['BACKEND_OPTIONS']."
            )

    def _not_implemented(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__module__}.{type(self).__qualname__} must implement {method}()"
        )

    async def add_connection(
        self,
        user_id: str,
        connection_id: str,
        *,
        ttl: float,
        server: str = "",
        limit: int | None = None,
        data: ConnectionData | None = None,
        idle: float = 0,
    ) -> Change:
        """Store a connection lease of ``ttl`` seconds; ONLINE if the user had no lease.

        With a ``server``, the connection is *filed under* that server instead of holding
        a lease of its own: it lives as long as the server's lease, which the call extends
        to at least ``ttl`` seconds from now (creating it unconfirmed, see
        :meth:`renew_server`, when the server had none). Adding an existing connection
        with ``server`` "" keeps the server it had, and its filing.

        Adding a connection removes any grace-period lease the user still had, so a
        reconnect within the grace period causes no transition at all; the new
        connection inherits that lease's data when ``data`` is None. Adding an id that
        already exists refreshes it. With ``limit``, a new connection of a user who
        already holds ``limit`` open connections is not stored: the change says
        ``refused`` (checked and stored in one atomic step, so concurrent connects never
        exceed it). ``data`` is stored with the connection; with ``idle`` > 0, connecting
        counts as activity (the user is away ``idle`` seconds from now at the earliest).
        """
        raise self._not_implemented("add_connection")

    async def remove_connection(
        self, user_id: str, connection_id: str, *, grace: float = 0
    ) -> Change:
        """Remove a connection; OFFLINE if it was the user's last lease.

        With ``grace`` > 0 and no other open connection, the lease is kept ``grace``
        seconds longer as a *closing* lease instead: the user stays online, and a later
        :meth:`sweep` announces OFFLINE unless a connection was added meanwhile. Removing
        an unknown connection is not an error and changes nothing. A connection filed under
        a server leaves its filing either way: a closing lease is always one of its own.
        """
        raise self._not_implemented("remove_connection")

    async def heartbeat(
        self, connections: Sequence[tuple[str, str]], *, ttl: float, server: str = ""
    ) -> list[tuple[str, Change]]:
        """Extend the leases of many ``(user_id, connection_id)`` pairs in one round trip.

        A pair filed under a server (see :meth:`add_connection`) is filed under it again,
        and that server's lease is extended instead of the pair's. A pair whose lease is
        missing or closing (it expired and was swept, the store was restarted empty, or it
        was removed while this heartbeat was under way) is stored again as an open
        connection (filed under ``server`` when one is given). The returned list holds
        ``(connection_id, change)`` for every pair stored again, and nothing for pairs that
        were merely extended; the caller removes again any of them it no longer holds open.
        """
        raise self._not_implemented("heartbeat")

    async def sweep(self, *, limit: int = 1000, lock_ttl: float = 0) -> SweepResult:
        """Remove up to ``limit`` expired leases and return the OFFLINE changes they caused.

        A server whose lease expired is dead: everything filed under it is retired, due
        now. Retired connections whose time came are removed unless filed again under
        their server meanwhile. At most ``limit`` connections are examined per call
        (``more`` says whether work is left), whatever a dead server held.

        It also derives again the presence of up to ``limit`` users whose ``away`` time
        or status expiry passed, and returns those that changed (transition NONE).

        With ``lock_ttl`` > 0 the sweep first takes a lock for that many seconds and does
        nothing (``swept=False``) if another process holds it, so that many servers
        sweeping on a timer do not repeat each other's work.
        """
        raise self._not_implemented("sweep")

    async def heartbeat_and_sweep(
        self,
        connections: Sequence[tuple[str, str]],
        *,
        ttl: float,
        server: str = "",
        limit: int = 1000,
        lock_ttl: float = 0,
    ) -> tuple[list[tuple[str, Change]], SweepResult]:
        """:meth:`heartbeat`, then :meth:`sweep`: what a server process does every interval.

        Backends that can do both in one round trip override this (the Redis backend runs
        one script); the default makes the two calls.
        """
        restored = await self.heartbeat(connections, ttl=ttl, server=server)
        return restored, await self.sweep(limit=limit, lock_ttl=lock_ttl)

    async def renew_server(self, server: str, *, ttl: float, rotate: bool = False) -> bool:
        """Extend ``server``'s lease to ``ttl`` seconds from now, whatever it holds.

        True when the lease was held and *confirmed*: taken by an earlier call and never
        lost since. False on the first call, after the lease expired and was swept (its
        connections removed), after the store lost it, or when only
        :meth:`add_connection` had (re)created it. After False the lease is held and
        confirmed, and the caller must file again every connection it holds with
        ``heartbeat(pairs, ttl=ttl, server=server)`` (those the store lost come back as
        restored).

        On False, and always with ``rotate`` (which returns False), whatever was filed
        under the server is *retired*: a sweep removes it ``ttl`` seconds from now unless
        it was filed again under the server by then. That drops connections a process
        failed to remove, with no transition for the users it still holds.

        The default returns False: a backend without per-server leases, whose caller
        then heartbeats every connection on every beat.
        """
        return False

    async def renew_server_and_sweep(
        self,
        server: str,
        *,
        ttl: float,
        rotate: bool = False,
        limit: int = 1000,
        lock_ttl: float = 0,
    ) -> tuple[bool, SweepResult]:
        """:meth:`renew_server`, then :meth:`sweep` (one round trip on Redis).

        The default makes the two calls.
        """
        held = await self.renew_server(server, ttl=ttl, rotate=rotate)
        return held, await self.sweep(limit=limit, lock_ttl=lock_ttl)

    # -- availability: states, activity, statuses, connection data ------------------------
    #
    # Every call below that can change what others see of a user derives the user's public
    # presence again and, when it differs from the last one announced, returns it in
    # ``Change.presence`` with a new seq (the transitions' counter). sweep() does the same
    # for users whose ``away`` time or status expiry passed, so that no call per
    # connection per interval is needed to turn users away.

    async def set_connection_data(
        self, user_id: str, connection_id: str, data: ConnectionData
    ) -> Change:
        """Replace a connection's data in place; no transition, maybe a presence change.

        An unknown or closing connection stores nothing (``Change`` with no presence).
        """
        raise self._not_implemented("set_connection_data")

    async def touch(self, activity: Sequence[tuple[str, float]], *, idle: float) -> list[Change]:
        """Record user activity: ``(user_id, seconds since their last activity)`` pairs.

        For each online user, ``last_active`` becomes ``now - ago`` unless it is already
        later (it never goes back), and the user turns away ``idle`` seconds after it.
        Offline users are ignored. Returns the changes of users whose public presence
        changed (an away user who is active again), in one round trip. The default
        records nothing (a backend without idle detection: nobody is ever away).
        """
        return []

    async def set_status(
        self, user_id: str, status: str, *, text: str = "", ttl: float | None = None
    ) -> Change:
        """Set the user's status (one of :data:`STATUSES`) and text, for ``ttl`` seconds.

        ``ttl`` None keeps them until changed; once it passes, the status is "available"
        again and the text cleared. Stored whether the user is online or not, and kept
        while they are offline.
        """
        raise self._not_implemented("set_status")

    async def availability(self, user_ids: Iterable[str]) -> dict[str, Availability]:
        """:class:`Availability` of each of ``user_ids`` (unknown users: offline), at once.

        The default, for a backend written before states, reads :meth:`presence_snapshot`:
        online users are plain ``online``, with no status, activity or data.
        """
        snapshot = await self.presence_snapshot(list(user_ids))
        return {
            uid: Availability(
                uid,
                online,
                seq,
                PublicPresence("online") if online else OFFLINE,
                "online" if online else "offline",
            )
            for uid, (online, seq) in snapshot.items()
        }

    async def remove_user(self, user_id: str) -> tuple[int, Change]:
        """Remove every lease of a user, with no grace; return how many and the change.

        The user's connections leave their servers' filings too.
        """
        raise self._not_implemented("remove_user")

    async def is_online(self, user_id: str) -> bool:
        """Whether the user holds at least one unexpired lease (grace leases included)."""
        raise self._not_implemented("is_online")

    async def connection_count(self, user_id: str) -> int:
        """How many open connections the user has (grace-period leases not counted)."""
        raise self._not_implemented("connection_count")

    async def online_user_ids(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` are online, in one round trip."""
        raise self._not_implemented("online_user_ids")

    async def presence_snapshot(self, user_ids: Iterable[str]) -> dict[str, tuple[bool, int]]:
        """For each id: (online, seq of the user's last transition, 0 if none), atomically."""
        raise self._not_implemented("presence_snapshot")

    async def all_online_user_ids(self) -> set[str]:
        """Every online user id (for monitoring and reconciliation)."""
        raise self._not_implemented("all_online_user_ids")

    async def user_connections(self, user_id: str) -> list[ConnectionInfo]:
        """The user's stored connections, open and closing, for monitoring.

        A connection filed under a server expires with the server's lease (a retired one:
        when it may be removed).
        """
        raise self._not_implemented("user_connections")

    # -- blocking reads, for sync callers ---------------------------------------------------
    #
    # Views, the admin, management commands and task queues read presence from sync code.
    # These defaults run the coroutines above through async_to_sync, which costs an event
    # loop per call (and, for a client cached per loop, a new connection). Override them
    # when the backend can read without an event loop; both shipped backends do.

    def is_online_sync(self, user_id: str) -> bool:
        """Blocking form of :meth:`is_online`, for sync code."""
        return async_to_sync(self.is_online)(user_id)

    def connection_count_sync(self, user_id: str) -> int:
        """Blocking form of :meth:`connection_count`, for sync code."""
        return async_to_sync(self.connection_count)(user_id)

    def online_user_ids_sync(self, user_ids: Iterable[str]) -> set[str]:
        """Blocking form of :meth:`online_user_ids`, for sync code."""
        return async_to_sync(self.online_user_ids)(list(user_ids))

    def all_online_user_ids_sync(self) -> set[str]:
        """Blocking form of :meth:`all_online_user_ids`, for sync code."""
        return async_to_sync(self.all_online_user_ids)()

    async def now(self) -> float:
        """The current time on the backend's own clock, in seconds.

        This is the clock in which :class:`ConnectionInfo` ``opened_at`` and
        ``expires_at`` are expressed (Redis ``TIME`` for the Redis backend, the injected
        clock, by default :func:`time.monotonic`, for the memory backend), so that a lease
        added with ``ttl`` T expires at about ``await now() + T``. Monitoring uses it to
        show lease times as wall-clock times; no web server's clock is involved.
        """
        raise self._not_implemented("now")

    # -- rooms: who is in each client group, across servers ---------------------------------
    #
    # Channel-layer groups cannot be listed, so the backend keeps the members of each client
    # group. A *membership* is one connection (``member_id``) of a user in a group, held as
    # a lease of ``ttl`` seconds on the backend's clock; the server holding it renews it with
    # room_refresh(). A group's count is the number of distinct users with at least one
    # membership, so a user's second tab joins silently. Each user-level join or leave bumps
    # the group's *version*, which consumers use to order updates against the member list
    # they read. A group with no members is forgotten entirely (its version included), so
    # group names used once cost nothing. Every method is one atomic step.

    async def room_join(
        self, group: str, user_id: str, member_id: str, *, ttl: float
    ) -> MemberChange:
        """Add a membership lease of ``ttl`` seconds; joining again refreshes it.

        The change has ``joined=True``; ``changed`` is True only when it is the user's
        first membership of the group, and only then is the version bumped.
        """
        raise self._not_implemented("room_join")

    async def room_leave(self, group: str, user_id: str, member_id: str) -> MemberChange:
        """Remove a membership; ``changed`` when it was the user's last one in the group.

        The change has ``joined=False``. Leaving a group the member is not in changes
        nothing (``changed=False``, counts and version as they are).
        """
        raise self._not_implemented("room_leave")

    async def room_members(self, group: str) -> tuple[list[str], int]:
        """The user ids in ``group`` (each once) and its version, read together."""
        raise self._not_implemented("room_members")

    async def room_count(self, group: str) -> tuple[int, int]:
        """How many distinct users are in ``group`` and its version, read together."""
        raise self._not_implemented("room_count")

    async def room_refresh(
        self, memberships: Sequence[tuple[str, str, str]], *, ttl: float
    ) -> None:
        """Extend to ``ttl`` seconds the leases of ``(group, user_id, member_id)`` memberships.

        Only memberships that exist are extended; a missing one (expired and swept, or
        left) is not created again. One round trip for all of them, whatever the number of
        groups: a server refreshes every membership it holds at once.
        """
        raise self._not_implemented("room_refresh")

    async def room_sweep(self, groups: Iterable[str], *, limit: int = 1000) -> list[MemberChange]:
        """Remove expired memberships of ``groups``, at most ``limit`` per group.

        Returns the user-level leaves they caused (``changed=True``, ``joined=False``),
        each once; expired memberships of users still in the group by another membership
        are removed silently. The rest of a group over ``limit`` goes at the next sweep.
        A backend may forget outright, with no leave to report, a group none of whose
        memberships was joined or refreshed for twice its longest lease (the Redis backend
        lets its keys expire then), so sweep well within that: the room tracker sweeps
        every heartbeat interval.
        """
        raise self._not_implemented("room_sweep")

    # -- occupancy: a group announced occupied, then emptied, exactly once ------------------
    #
    # A group's *occupied flag* says its occupancy was announced and its emptying not yet.
    # The caller sets it after a join that took the group from 0 users to 1 (room_occupied)
    # and takes it OFFLINE_GRACE_PERIOD after a leave or an expiry that left the group empty
    # (room_settle): a group that empties and is joined again within the grace period
    # announces neither. The flag outlives the group's members (it is what says an
    # emptying is pending) but is kept, like the group's other state, only two leases
    # after the last join or refresh of one of its memberships: a group abandoned by
    # crashed servers, which nobody sweeps, eventually forgets its flag without announcing
    # its emptying, and so does a group whose emptying is settled later than that. The
    # defaults, for a backend written before occupancy, never announce anything.

    async def room_occupied(self, group: str) -> bool:
        """Set ``group``'s occupied flag; True only if this call set it.

        Called after a join whose change went from ``count_before`` 0 to at least 1. False
        when the flag was already set (the group emptied and was joined again before its
        emptying was settled: nothing to announce) or when the group has no member any
        more (it emptied again meanwhile, and no emptying will be announced).
        """
        return False

    async def room_settle(self, group: str) -> bool:
        """Take ``group``'s occupied flag if the group is empty; True only if this call did.

        Called a grace period after a leave or an expiry that left the group empty; True
        means "announce that it emptied". One atomic step: of many callers, across
        processes, at most one gets True per occupancy. False when the group has members
        again (its next emptying settles it) or the flag is not set.
        """
        return False

    # -- streams: what was sent, so that a reconnecting client misses nothing --------------
    #
    # A *stream* is an append-only log of publications (a user's messages, a client group's,
    # the system broadcasts), each with an offset, under an epoch (see StreamPosition). The
    # backend keeps the last ``limits.size`` publications of ``limits.ttl`` seconds, so a
    # client that reconnects replays what it missed; and, per user, the highest offset
    # delivered and acknowledged, so that what nobody acknowledged before a deadline can
    # be handed to a fallback (e-mail, push) exactly once across servers. Stream names and
    # payloads are opaque strings to the backend. Every method is one atomic step (one
    # round trip on Redis, whatever the number of streams in the call).

    async def stream_publish(
        self,
        stream: str,
        payload: str,
        *,
        limits: StreamLimits,
        track: tuple[str, float] | None = None,
    ) -> StreamPosition:
        """Append ``payload`` to ``stream``; return the stream's epoch and the new offset.

        A stream that does not exist (or whose history was lost) starts a new epoch at
        offset 1. The stream is then trimmed to ``limits``. With ``track`` =
        ``(user_id, delay)``, the publication is also recorded as due ``delay`` seconds
        from now (backend clock) for :meth:`stream_due`, unless that user acknowledged it.
        """
        raise self._not_implemented("stream_publish")

    async def stream_read(
        self,
        requests: Sequence[tuple[str, int | None, str | None]],
        *,
        limits: StreamLimits,
    ) -> list[StreamRead]:
        """Read many streams at once: for each ``(stream, since, epoch)``, what came after.

        ``since`` None reads the position only (no entries, ``recovered`` True): what a
        client that has seen nothing yet needs. Otherwise the entries with an offset
        above ``since`` that are stored and younger than ``limits.ttl`` are returned,
        oldest first, with ``recovered`` False when ``epoch`` is not the stream's, when
        ``since`` is beyond its latest offset, or when an entry after ``since`` is gone.
        A stream with no epoch yet gets one (offset 0), so that every reader holds an
        epoch that a later loss of the store changes. Results are in request order.
        """
        raise self._not_implemented("stream_read")

    async def stream_positions(self, streams: Iterable[str]) -> dict[str, StreamPosition | None]:
        """The position of each stream, or None for a stream with no epoch; reads only."""
        raise self._not_implemented("stream_positions")

    async def stream_ack(
        self, updates: Sequence[tuple[str, str, str, int, int]], *, limits: StreamLimits
    ) -> None:
        """Raise users' delivered and acknowledged offsets: ``(stream, user_id, epoch,
        delivered, acked)`` each.

        Stored offsets only grow (``delivered`` is kept at least ``acked``), offsets
        beyond the stream's latest are capped to it, and an update in an epoch that is
        not the stream's current one is ignored. Kept as long as the stream's epoch.
        """
        raise self._not_implemented("stream_ack")

    async def stream_cursor(self, stream: str, user_id: str) -> StreamCursor | None:
        """The stream's position and the user's delivered/acked offsets; None: no epoch."""
        raise self._not_implemented("stream_cursor")

    async def stream_due(self, *, limit: int = 1000) -> list[Undelivered]:
        """Take up to ``limit`` tracked publications whose deadline passed.

        Each tracked publication is taken once, by one caller, whatever the number of
        processes calling: the ones its user acknowledged (in the same epoch) are dropped
        silently, the others returned, oldest deadline first.
        """
        raise self._not_implemented("stream_due")

    async def clear(self) -> None:
        """Delete every piece of state this backend owns, rooms and streams included."""
        raise self._not_implemented("clear")

    async def aclose(self) -> None:
        """Release connections held for the running event loop. Optional to override."""
