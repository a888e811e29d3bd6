"""In-process presence backend, for development and tests.

State lives in this process only: several server processes each see only their own
connections. Use :class:`~django_presence.backends.redis.RedisBackend` in production.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .base import (
    OFFLINE,
    Availability,
    BasePresenceBackend,
    Change,
    ConnectionData,
    ConnectionInfo,
    MemberChange,
    PublicPresence,
    StreamCursor,
    StreamEntry,
    StreamLimits,
    StreamPosition,
    StreamRead,
    SweepResult,
    Transition,
    Undelivered,
    check_retention,
)


@dataclass
class _Lease:
    expires_at: float  # Of the connection's own lease: unused while it is filed.
    opened_at: float
    closing: bool
    server: str

    @property
    def filed(self) -> bool:
        """Filed under its server (which holds its lease), rather than a lease of its own."""
        return bool(self.server) and not self.closing


@dataclass
class _Retired:
    """A server's filing retired (rotated, or the server dead): removed once ``due``."""

    server: str
    due: float
    pairs: set[tuple[str, str]]


@dataclass
class _Availability:
    """A user's status, activity and connection data (see the contract's availability part)."""

    status: str = "available"
    text: str = ""
    until: float | None = None
    last_active: float | None = None
    away_at: float | None = None
    announced: PublicPresence = OFFLINE
    data: dict[str, ConnectionData] = field(default_factory=dict)

    def empty(self) -> bool:
        """Whether nothing is kept: the record can go (an offline user with no status)."""
        return (
            self.status == "available"
            and not self.text
            and not self.data
            and self.last_active is None
            and self.announced == OFFLINE
        )


@dataclass
class _Stream:
    epoch: str
    expires_at: float
    offset: int = 0
    # The history's ttl as last published: stream_due() skips older entries, as reads do.
    ttl: float = 0.0
    entries: deque[StreamEntry] = field(default_factory=deque)
    # user id -> (delivered, acked)
    cursors: dict[str, tuple[int, int]] = field(default_factory=dict)


class MemoryBackend(BasePresenceBackend):
    """Presence kept in a dict, guarded by one lock so every call is one atomic step.

    Behaves exactly like the Redis backend (the same contract suite runs on both), but is
    not shared between processes. ``clock`` may be given for tests; it defaults to
    :func:`time.monotonic`. ``transition_retention`` is as for the Redis backend: a
    user's last transition seq is forgotten that many seconds after they went offline.
    """

    shared_across_processes = False

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        transition_retention: float = 3600.0,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._retention = check_retention(transition_retention)
        # Users offline whose last seq is still kept, oldest first: user id -> since when.
        self._offline_since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, _Lease]] = {}
        self._transition_seq: dict[str, int] = {}
        self._seq = 0
        self._sweep_lock_until = 0.0
        # Rooms: group -> (user id, member id) -> lease expiry, keyed like the Redis
        # members; group -> user id -> how many memberships the user has; group -> version.
        self._rooms: dict[str, dict[tuple[str, str], float]] = {}
        self._room_users: dict[str, dict[str, int]] = {}
        self._room_versions: dict[str, int] = {}
        # Occupancy: group -> until when the group's state is kept (two leases after the
        # last join or refresh, as the Redis keys' expiry); group -> until when its occupied
        # flag is kept (set by room_occupied, taken by room_settle; it outlives the members).
        self._room_keep: dict[str, float] = {}
        self._room_flags: dict[str, float] = {}
        # Streams: name -> its epoch, history and users' cursors; tracked publications as
        # a heap of (deadline, tie-breaker, stream, user id, epoch, offset, publish time).
        self._streams: dict[str, _Stream] = {}
        self._due: list[tuple[float, int, str, str, str, int, float]] = []
        self._due_ids = itertools.count()
        # Availability: user id -> status, activity, data; user id -> when their presence
        # must be derived again (away time or status expiry), for sweep().
        self._avail: dict[str, _Availability] = {}
        self._avail_due: dict[str, float] = {}
        # Server leases (as the Redis keys): server -> lease expiry; the servers whose lease
        # is confirmed (renew_server); server -> the (user id, connection id) pairs filed
        # under it; its retired filings, in the order they were retired.
        self._procs: dict[str, float] = {}
        self._pconf: set[str] = set()
        self._filed: dict[str, set[tuple[str, str]]] = {}
        self._retired: list[_Retired] = []

    def _next_seq(self, user_id: str) -> int:
        # Never below the wall clock in microseconds, as on Redis: a transition that
        # reconcile() announces with a seq from the clock is ordered after this one.
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        self._transition_seq[user_id] = self._seq
        return self._seq

    def _transition(self, user_id: str, transition: Transition, count: int) -> Change:
        if transition is not Transition.NONE:
            self._offline_since.pop(user_id, None)  # re-inserted last: the dict stays in order
            if transition is Transition.OFFLINE:
                self._offline_since[user_id] = self._clock()
        return self._announce(user_id, transition, count)

    # -- availability: the one derivation of a user's state (the Redis scripts' derive()) --

    def _derive(self, user_id: str, now: float) -> tuple[PublicPresence, str]:
        """(what others see, what the user sees of themselves), expiring a status."""
        record = self._avail.get(user_id)
        if record is not None and record.until is not None and record.until <= now:
            record.status, record.text, record.until = "available", "", None
        leases = self._users.get(user_id)
        if not leases:
            return OFFLINE, "offline"
        data = [d for cid, d in (record.data.items() if record else ()) if cid in leases]
        if record is not None and record.status == "busy":
            state = "busy"
        elif any(d.keep_present for d in data):
            state = "online"
        elif record is not None and record.away_at is not None and now >= record.away_at:
            state = "away"
        else:
            state = "online"
        if record is not None and record.status == "invisible":
            return OFFLINE, state
        devices = tuple(sorted({d.device for d in data if d.device}))
        activities = tuple(sorted({d.activity for d in data if d.activity}))
        text = record.text if record is not None else ""
        return PublicPresence(state, devices, activities, text), state

    def _announce(self, user_id: str, transition: Transition, count: int) -> Change:
        """Derive the user's presence; a new seq if it or the transition changed."""
        now = self._clock()
        public, _ = self._derive(user_id, now)
        record = self._avail.get(user_id)
        announced = record.announced if record is not None else OFFLINE
        presence = public if public != announced else None
        hidden = record is not None and record.status == "invisible"
        seq = 0
        if transition is not Transition.NONE or presence is not None:
            seq = self._next_seq(user_id)
        if presence is not None:
            if record is None:
                record = self._avail[user_id] = _Availability()
            record.announced = public
        if record is not None:
            if user_id not in self._users:
                record.data.clear()
                record.last_active = record.away_at = None
            candidates = (record.until, record.away_at if public.state == "online" else None)
            online = user_id in self._users
            due = [t for t in candidates if t is not None and t > now and online]
            if due:
                self._avail_due[user_id] = min(due)
            else:
                self._avail_due.pop(user_id, None)
            if record.empty():
                del self._avail[user_id]
        return Change(user_id, transition, count, seq, presence=presence, hidden=hidden)

    def _set_data(self, user_id: str, connection_id: str, data: ConnectionData | None) -> None:
        record = self._avail.get(user_id)
        if data is None:
            if record is not None:
                record.data.pop(connection_id, None)
            return
        if record is None:
            record = self._avail[user_id] = _Availability()
        record.data[connection_id] = data

    @staticmethod
    def _open_count(leases: dict[str, _Lease]) -> int:
        return sum(1 for lease in leases.values() if not lease.closing)

    # -- server leases: the connections filed under a server live as long as its lease --

    def _file(self, user_id: str, connection_id: str, server: str) -> None:
        self._filed.setdefault(server, set()).add((user_id, connection_id))

    def _unfile(self, user_id: str, connection_id: str, lease: _Lease) -> None:
        """Take the connection out of its server's live filing (retired ones stay: the
        sweep skips what is gone or no longer filed there)."""
        filing = self._filed.get(lease.server)
        if filing is not None:
            filing.discard((user_id, connection_id))
            if not filing:
                del self._filed[lease.server]

    def _retire(self, server: str, due: float) -> None:
        filing = self._filed.pop(server, None)
        if filing:
            self._retired.append(_Retired(server, due, filing))

    def _expires_at(self, user_id: str, connection_id: str, lease: _Lease) -> float:
        """When the connection goes: its own lease's expiry, or its server's (retired: when
        the first retired filing holding it may be removed)."""
        if not lease.filed:
            return lease.expires_at
        pair = (user_id, connection_id)
        if pair in self._filed.get(lease.server, ()):
            return self._procs.get(lease.server, lease.expires_at)
        dues = [r.due for r in self._retired if r.server == lease.server and pair in r.pairs]
        return min(dues, default=lease.expires_at)

    async def renew_server(self, server: str, *, ttl: float, rotate: bool = False) -> bool:
        with self._lock:
            return self._renew_server(server, ttl, rotate)

    def _renew_server(self, server: str, ttl: float, rotate: bool) -> bool:
        now = self._clock()
        held = server in self._pconf
        self._procs[server] = now + ttl
        self._pconf.add(server)
        if rotate or not held:
            self._retire(server, now + ttl)
        return held and not rotate

    async def renew_server_and_sweep(
        self,
        server: str,
        *,
        ttl: float,
        rotate: bool = False,
        limit: int = 1000,
        lock_ttl: float = 0,
    ) -> tuple[bool, SweepResult]:
        with self._lock:
            held = self._renew_server(server, ttl, rotate)
            return held, self._sweep(limit, lock_ttl)

    def _store(
        self,
        user_id: str,
        connection_id: str,
        ttl: float,
        server: str,
        data: ConnectionData | None = None,
        idle: float = 0,
    ) -> Change:
        now = self._clock()
        leases = self._users.get(user_id)
        was_online = bool(leases)
        if leases is None:
            leases = self._users[user_id] = {}
        old = leases.get(connection_id)
        record = self._avail.get(user_id)
        for cid in [cid for cid, lease in leases.items() if lease.closing]:
            del leases[cid]
            if record is not None and cid != connection_id:
                inherited = record.data.pop(cid, None)
                if data is None and inherited is not None:
                    data = inherited
        lease = leases[connection_id] = _Lease(
            now + ttl, old.opened_at if old else now, False, server or (old.server if old else "")
        )
        if old is not None and old.server != lease.server:
            self._unfile(user_id, connection_id, old)
        if lease.server:
            self._file(user_id, connection_id, lease.server)
            self._procs[lease.server] = max(self._procs.get(lease.server, now), now + ttl)
        if data is not None:
            self._set_data(user_id, connection_id, data)
        if idle > 0:
            record = self._avail.get(user_id)
            if record is None:
                record = self._avail[user_id] = _Availability()
            record.last_active = now
            record.away_at = now + idle
        count = self._open_count(leases)
        return self._transition(
            user_id, Transition.NONE if was_online else Transition.ONLINE, count
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
        with self._lock:
            leases = self._users.get(user_id, {})
            if limit is not None and connection_id not in leases:
                count = self._open_count(leases)
                if count >= limit:
                    return Change(user_id, Transition.NONE, count, refused=True)
            return self._store(user_id, connection_id, ttl, server, data, idle)

    async def remove_connection(
        self, user_id: str, connection_id: str, *, grace: float = 0
    ) -> Change:
        with self._lock:
            leases = self._users.get(user_id)
            if not leases or connection_id not in leases:
                return Change(user_id, Transition.NONE, self._open_count(leases or {}))
            lease = leases[connection_id]
            if lease.closing:
                return Change(user_id, Transition.NONE, 0)
            self._unfile(user_id, connection_id, lease)
            if grace > 0 and self._open_count(leases) == 1:
                lease.closing = True
                lease.expires_at = self._clock() + grace
                return Change(user_id, Transition.NONE, 0)
            del leases[connection_id]
            self._set_data(user_id, connection_id, None)
            if leases:
                return self._announce(user_id, Transition.NONE, self._open_count(leases))
            del self._users[user_id]
            return self._transition(user_id, Transition.OFFLINE, 0)

    async def heartbeat(
        self, connections: Sequence[tuple[str, str]], *, ttl: float, server: str = ""
    ) -> list[tuple[str, Change]]:
        restored = []
        with self._lock:
            expires = self._clock() + ttl
            for user_id, connection_id in connections:
                lease = self._users.get(user_id, {}).get(connection_id)
                if lease is not None and not lease.closing:
                    lease.expires_at = expires
                    if lease.filed:
                        self._file(user_id, connection_id, lease.server)
                        self._procs[lease.server] = expires
                    continue
                restored.append((connection_id, self._store(user_id, connection_id, ttl, server)))
        return restored

    async def sweep(self, *, limit: int = 1000, lock_ttl: float = 0) -> SweepResult:
        with self._lock:
            return self._sweep(limit, lock_ttl)

    def _sweep(self, limit: int, lock_ttl: float) -> SweepResult:
        now = self._clock()
        if lock_ttl > 0:
            if now < self._sweep_lock_until:
                return SweepResult(swept=False)
            self._sweep_lock_until = now + lock_ttl
        self._forget_old_transitions(now, limit)
        # Connections with a lease of their own whose lease expired.
        expired: dict[str, list[str]] = {}
        examined = 0
        more = False
        for user_id, leases in self._users.items():
            for cid, lease in leases.items():
                if lease.filed or lease.expires_at > now:
                    continue
                if examined >= limit:
                    more = True
                    break
                expired.setdefault(user_id, []).append(cid)
                examined += 1
            if more:
                break
        # Dead servers: everything they filed is retired, removable now.
        for server in [s for s, until in self._procs.items() if until <= now]:
            del self._procs[server]
            self._pconf.discard(server)
            self._retire(server, now)
        # Retired connections whose time came, unless filed again under their server.
        for retired in sorted((r for r in self._retired if r.due <= now), key=lambda r: r.due):
            while retired.pairs and examined < limit:
                user_id, cid = retired.pairs.pop()
                examined += 1
                found = self._users.get(user_id, {}).get(cid)
                if (
                    found is not None
                    and found.filed
                    and found.server == retired.server
                    and (user_id, cid) not in self._filed.get(retired.server, ())
                ):
                    expired.setdefault(user_id, []).append(cid)
            if retired.pairs:
                more = True
                break
        self._retired = [r for r in self._retired if r.pairs]
        removed = 0
        changes = []
        for user_id, cids in expired.items():
            leases = self._users[user_id]
            for cid in cids:
                if cid in leases:  # Twice when in two retired filings of its server.
                    del leases[cid]
                    self._set_data(user_id, cid, None)
                    removed += 1
            if not leases:
                del self._users[user_id]
                changes.append(self._transition(user_id, Transition.OFFLINE, 0))
            else:
                change = self._announce(user_id, Transition.NONE, 0)
                if change.presence is not None:
                    changes.append(change)
        due = [uid for uid, when in self._avail_due.items() if when <= now][:limit]
        for user_id in due:
            # connection_count 0, as on Redis: a presence change counts nothing.
            change = self._announce(user_id, Transition.NONE, 0)
            if change.presence is not None:
                changes.append(change)
        return SweepResult(removed, tuple(changes), more=more)

    def _forget_old_transitions(self, now: float, limit: int) -> None:
        for user_id, since in list(itertools.islice(self._offline_since.items(), limit)):
            if since > now - self._retention:
                break
            del self._offline_since[user_id]
            if user_id not in self._users:
                self._transition_seq.pop(user_id, None)

    async def remove_user(self, user_id: str) -> tuple[int, Change]:
        with self._lock:
            leases = self._users.pop(user_id, None)
            if not leases:
                return 0, Change(user_id, Transition.NONE, 0)
            for cid, lease in leases.items():
                self._unfile(user_id, cid, lease)
            return len(leases), self._transition(user_id, Transition.OFFLINE, 0)

    async def set_connection_data(
        self, user_id: str, connection_id: str, data: ConnectionData
    ) -> Change:
        with self._lock:
            leases = self._users.get(user_id, {})
            lease = leases.get(connection_id)
            if lease is None or lease.closing:
                return Change(user_id, Transition.NONE, self._open_count(leases))
            self._set_data(user_id, connection_id, data)
            return self._announce(user_id, Transition.NONE, self._open_count(leases))

    async def touch(self, activity: Sequence[tuple[str, float]], *, idle: float) -> list[Change]:
        changes = []
        with self._lock:
            now = self._clock()
            for user_id, ago in activity:
                leases = self._users.get(user_id)
                if not leases:
                    continue
                record = self._avail.get(user_id)
                if record is None:
                    record = self._avail[user_id] = _Availability()
                when = now - max(0.0, ago)
                if record.last_active is not None and record.last_active >= when:
                    continue
                record.last_active = when
                record.away_at = when + idle if idle > 0 else None
                change = self._announce(user_id, Transition.NONE, 0)
                if change.presence is not None:
                    changes.append(change)
        return changes

    async def set_status(
        self, user_id: str, status: str, *, text: str = "", ttl: float | None = None
    ) -> Change:
        with self._lock:
            record = self._avail.get(user_id)
            if record is None:
                record = self._avail[user_id] = _Availability()
            record.status, record.text = status, text
            record.until = None if ttl is None else self._clock() + ttl
            return self._announce(
                user_id, Transition.NONE, self._open_count(self._users.get(user_id, {}))
            )

    async def availability(self, user_ids: Iterable[str]) -> dict[str, Availability]:
        found = {}
        with self._lock:
            now = self._clock()
            for user_id in user_ids:
                public, state = self._derive(user_id, now)
                record = self._avail.get(user_id) or _Availability()
                leases = self._users.get(user_id, {})
                found[user_id] = Availability(
                    user_id,
                    bool(leases),
                    self._transition_seq.get(user_id, 0),
                    public,
                    state,
                    record.status,
                    record.text,
                    record.until,
                    record.last_active,
                    {cid: record.data.get(cid, ConnectionData()) for cid in leases},
                )
        return found

    async def is_online(self, user_id: str) -> bool:
        return self.is_online_sync(user_id)

    async def connection_count(self, user_id: str) -> int:
        return self.connection_count_sync(user_id)

    async def online_user_ids(self, user_ids: Iterable[str]) -> set[str]:
        return self.online_user_ids_sync(user_ids)

    def is_online_sync(self, user_id: str) -> bool:
        return user_id in self._users

    def connection_count_sync(self, user_id: str) -> int:
        with self._lock:
            return self._open_count(self._users.get(user_id, {}))

    def online_user_ids_sync(self, user_ids: Iterable[str]) -> set[str]:
        users = self._users
        return {user_id for user_id in user_ids if user_id in users}

    def all_online_user_ids_sync(self) -> set[str]:
        with self._lock:
            return set(self._users)

    async def presence_snapshot(self, user_ids: Iterable[str]) -> dict[str, tuple[bool, int]]:
        with self._lock:
            return {
                uid: (uid in self._users, self._transition_seq.get(uid, 0)) for uid in user_ids
            }

    async def all_online_user_ids(self) -> set[str]:
        return self.all_online_user_ids_sync()

    async def user_connections(self, user_id: str) -> list[ConnectionInfo]:
        with self._lock:
            return [
                ConnectionInfo(
                    user_id,
                    cid,
                    lease.opened_at,
                    self._expires_at(user_id, cid, lease),
                    lease.closing,
                    lease.server,
                )
                for cid, lease in self._users.get(user_id, {}).items()
            ]

    async def now(self) -> float:
        return self._clock()

    # -- rooms -------------------------------------------------------------------------------

    def _bump(self, group: str) -> int:
        self._room_versions[group] = self._room_versions.get(group, 0) + 1
        return self._room_versions[group]

    def _unchanged(self, group: str, user_id: str, joined: bool) -> MemberChange:
        count = len(self._room_users.get(group, {}))
        version = self._room_versions.get(group, 0)
        return MemberChange(group, user_id, joined, False, count, count, version)

    def _room_remove(self, group: str, key: tuple[str, str]) -> MemberChange | None:
        del self._rooms[group][key]
        user_id = key[0]
        users = self._room_users[group]
        before = len(users)
        users[user_id] -= 1
        if users[user_id] > 0:
            return None
        del users[user_id]
        change = MemberChange(group, user_id, False, True, before, len(users), self._bump(group))
        if not users:
            # Forget the empty group entirely, so group names used once cost nothing.
            del self._room_users[group], self._rooms[group], self._room_versions[group]
            self._room_keep.pop(group, None)
        return change

    def _room_kept(self, group: str, ttl: float) -> None:
        """Keep the group, and its occupied flag, two leases from now (never shorter)."""
        until = self._clock() + 2 * ttl
        self._room_keep[group] = max(self._room_keep.get(group, until), until)
        if group in self._room_flags:
            self._room_flags[group] = max(self._room_flags[group], until)

    def _flagged(self, group: str) -> bool:
        """Whether the group's occupied flag is set (and not expired: then forget it)."""
        until = self._room_flags.get(group)
        if until is not None and until <= self._clock():
            del self._room_flags[group]
            return False
        return until is not None

    async def room_join(
        self, group: str, user_id: str, member_id: str, *, ttl: float
    ) -> MemberChange:
        with self._lock:
            room = self._rooms.setdefault(group, {})
            users = self._room_users.setdefault(group, {})
            new = (user_id, member_id) not in room
            room[(user_id, member_id)] = self._clock() + ttl
            self._room_kept(group, ttl)
            if not new:
                return self._unchanged(group, user_id, True)
            before = len(users)
            users[user_id] = users.get(user_id, 0) + 1
            if users[user_id] > 1:
                return self._unchanged(group, user_id, True)
            return MemberChange(group, user_id, True, True, before, len(users), self._bump(group))

    async def room_leave(self, group: str, user_id: str, member_id: str) -> MemberChange:
        with self._lock:
            change = None
            if (user_id, member_id) in self._rooms.get(group, {}):
                change = self._room_remove(group, (user_id, member_id))
            return change or self._unchanged(group, user_id, False)

    async def room_members(self, group: str) -> tuple[list[str], int]:
        with self._lock:
            return list(self._room_users.get(group, {})), self._room_versions.get(group, 0)

    async def room_count(self, group: str) -> tuple[int, int]:
        with self._lock:
            return len(self._room_users.get(group, {})), self._room_versions.get(group, 0)

    async def room_refresh(
        self, memberships: Sequence[tuple[str, str, str]], *, ttl: float
    ) -> None:
        with self._lock:
            expires = self._clock() + ttl
            for group, user_id, member_id in memberships:
                room = self._rooms.get(group)
                if room is None:
                    continue
                if (user_id, member_id) in room:
                    room[(user_id, member_id)] = expires
                self._room_kept(group, ttl)  # as the Redis keys' expiry

    async def room_sweep(self, groups: Iterable[str], *, limit: int = 1000) -> list[MemberChange]:
        changes = []
        with self._lock:
            now = self._clock()
            for group in groups:
                room = self._rooms.get(group, {})
                expired = [key for key, expiry in room.items() if expiry <= now]
                for key in expired[:limit]:
                    change = self._room_remove(group, key)
                    if change is not None:
                        changes.append(change)
        return changes

    async def room_occupied(self, group: str) -> bool:
        with self._lock:
            if self._flagged(group) or not self._room_users.get(group):
                return False
            self._room_flags[group] = self._room_keep[group]
            return True

    async def room_settle(self, group: str) -> bool:
        with self._lock:
            if self._room_users.get(group) or not self._flagged(group):
                return False
            del self._room_flags[group]
            return True

    # -- streams ------------------------------------------------------------------------------

    def _stream(self, name: str, now: float, *, create_ttl: float | None) -> _Stream | None:
        stream = self._streams.get(name)
        if stream is not None and stream.expires_at <= now:
            del self._streams[name]
            stream = None
        if stream is None and create_ttl is not None:
            stream = self._streams[name] = _Stream(uuid.uuid4().hex[:8], now + create_ttl)
        return stream

    @staticmethod
    def _trim(stream: _Stream, now: float, limits: StreamLimits) -> None:
        entries = stream.entries
        while entries and (len(entries) > limits.size or entries[0].time <= now - limits.ttl):
            entries.popleft()

    def _forget_streams(self, now: float, limit: int) -> None:
        expired = [name for name, s in self._streams.items() if s.expires_at <= now]
        for name in expired[:limit]:
            del self._streams[name]

    async def stream_publish(
        self,
        stream: str,
        payload: str,
        *,
        limits: StreamLimits,
        track: tuple[str, float] | None = None,
    ) -> StreamPosition:
        with self._lock:
            now = self._clock()
            found = self._stream(stream, now, create_ttl=limits.meta_ttl)
            assert found is not None
            found.offset += 1
            found.expires_at = now + limits.meta_ttl
            found.ttl = limits.ttl
            found.entries.append(StreamEntry(found.offset, payload, now))
            self._trim(found, now, limits)
            if track is not None:
                user_id, delay = track
                heapq.heappush(
                    self._due,
                    (
                        now + delay,
                        next(self._due_ids),
                        stream,
                        user_id,
                        found.epoch,
                        found.offset,
                        now,
                    ),
                )
            return StreamPosition(found.epoch, found.offset)

    async def stream_read(
        self,
        requests: Sequence[tuple[str, int | None, str | None]],
        *,
        limits: StreamLimits,
    ) -> list[StreamRead]:
        reads = []
        with self._lock:
            now = self._clock()
            for name, since, epoch in requests:
                stream = self._stream(name, now, create_ttl=limits.meta_ttl)
                assert stream is not None
                if since is None:
                    reads.append(StreamRead(name, stream.epoch, stream.offset))
                    continue
                if epoch != stream.epoch or since > stream.offset or since < 0:
                    reads.append(StreamRead(name, stream.epoch, stream.offset, recovered=False))
                    continue
                self._trim(stream, now, limits)
                entries = tuple(e for e in stream.entries if e.offset > since)
                first = entries[0].offset if entries else stream.offset + 1
                reads.append(
                    StreamRead(name, stream.epoch, stream.offset, entries, first == since + 1)
                )
        return reads

    async def stream_positions(self, streams: Iterable[str]) -> dict[str, StreamPosition | None]:
        with self._lock:
            now = self._clock()
            found = {name: self._stream(name, now, create_ttl=None) for name in streams}
        return {
            name: None if s is None else StreamPosition(s.epoch, s.offset)
            for name, s in found.items()
        }

    async def stream_ack(
        self, updates: Sequence[tuple[str, str, str, int, int]], *, limits: StreamLimits
    ) -> None:
        with self._lock:
            now = self._clock()
            for name, user_id, epoch, delivered, acked in updates:
                stream = self._stream(name, now, create_ttl=None)
                if stream is None or stream.epoch != epoch:
                    continue
                old_delivered, old_acked = stream.cursors.get(user_id, (0, 0))
                acked = min(max(old_acked, acked), stream.offset)
                delivered = min(max(old_delivered, delivered, acked), stream.offset)
                stream.cursors[user_id] = (delivered, acked)

    async def stream_cursor(self, stream: str, user_id: str) -> StreamCursor | None:
        with self._lock:
            found = self._stream(stream, self._clock(), create_ttl=None)
            if found is None:
                return None
            delivered, acked = found.cursors.get(user_id, (0, 0))
            return StreamCursor(found.epoch, found.offset, delivered, acked)

    async def stream_due(self, *, limit: int = 1000) -> list[Undelivered]:
        due: list[Undelivered] = []
        with self._lock:
            now = self._clock()
            while self._due and self._due[0][0] <= now and len(due) < limit:
                _, _, name, user_id, epoch, offset, published = heapq.heappop(self._due)
                stream = self._stream(name, now, create_ttl=None)
                if stream is not None and stream.epoch == epoch:
                    if stream.cursors.get(user_id, (0, 0))[1] >= offset:
                        continue
                    entry = next(
                        (
                            e
                            for e in stream.entries
                            if e.offset == offset and e.time > now - stream.ttl
                        ),
                        None,
                    )
                else:
                    entry = None
                payload = None if entry is None else entry.payload
                due.append(Undelivered(name, user_id, epoch, offset, payload, published))
            self._forget_streams(now, limit)
        return due

    async def clear(self) -> None:
        with self._lock:
            self._streams.clear()
            self._due.clear()
            self._avail.clear()
            self._avail_due.clear()
            self._users.clear()
            self._procs.clear()
            self._pconf.clear()
            self._filed.clear()
            self._retired.clear()
            self._transition_seq.clear()
            self._offline_since.clear()
            self._sweep_lock_until = 0.0
            self._rooms.clear()
            self._room_users.clear()
            self._room_versions.clear()
            self._room_keep.clear()
            self._room_flags.clear()
