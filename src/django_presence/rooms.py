"""Who is in each client group ("room"), across servers, for per-room presence.

Channel-layer groups cannot be listed, so ``ws/user/`` keeps its own registry of the
connections that joined each client group: in Redis when the presence backend is
:class:`~django_presence.backends.redis.RedisBackend` (same Redis, keys under the same
``{KEY_PREFIX}`` hash tag), in this process's memory otherwise.

Each membership is a lease of ``CONNECTION_TTL`` seconds. Every server process refreshes
the leases of the memberships it holds every ``HEARTBEAT_INTERVAL`` in one round trip,
and sweeps the expired memberships of the groups it has members in, announcing the users
they take out of a group. The members of a crashed server therefore leave its groups
within ``CONNECTION_TTL + HEARTBEAT_INTERVAL`` seconds, as its users go offline.

A group's member count is the number of distinct users with at least one membership; a
user's second tab joins silently. Each user-level join or leave bumps the group's
*version*, which consumers use to order updates against the member list they read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer

from . import groups
from .backends import BasePresenceBackend, get_backend
from .conf import number_setting, presence_settings

logger = logging.getLogger(__name__)

#: Channel-layer message type of a member update (handled by ``presence_group_member``).
MEMBER_EVENT = "presence.group_member"

# Expired memberships removed per group and sweep; the rest go at the next sweep.
_SWEEP_LIMIT = 1000


@dataclass(frozen=True)
class MemberChange:
    """What one join, leave or expiry did to a group.

    ``changed`` is True when the user joined or left the group as a user (their first
    connection joined or their last left); ``count_before`` and ``count`` are the group's
    user counts around the call, ``version`` the group's version after it.
    """

    group: str
    user_id: str
    joined: bool
    changed: bool
    count_before: int
    count: int
    version: int


class BaseRoomRegistry:
    """The contract of a room registry; every method is one atomic step."""

    async def join(self, group: str, user_id: str, connection_id: str, ttl: float) -> MemberChange:
        """Add a membership lease of ``ttl`` seconds (refresh it if it exists)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement join()")

    async def leave(self, group: str, user_id: str, connection_id: str) -> MemberChange:
        """Remove a membership; leaving a group one is not in changes nothing."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement leave()")

    async def members(self, group: str) -> tuple[list[str], int]:
        """The user ids in ``group`` and its version, read together."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement members()")

    async def count(self, group: str) -> tuple[int, int]:
        """How many users are in ``group`` and its version, read together."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement count()")

    async def refresh(self, memberships: Sequence[tuple[str, str, str]], ttl: float) -> None:
        """Extend the leases of ``(group, user_id, connection_id)`` memberships that exist."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement refresh()")

    async def sweep(self, group_names: Iterable[str]) -> list[MemberChange]:
        """Remove expired memberships of ``group_names``; return the user-level leaves."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement sweep()")


class MemoryRoomRegistry(BaseRoomRegistry):
    """Rooms in this process only (with the in-memory presence backend)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # group -> connection id -> (user id, lease expiry)
        self._rooms: dict[str, dict[str, tuple[str, float]]] = {}
        self._users: dict[str, dict[str, int]] = {}  # group -> user id -> connections
        self._versions: dict[str, int] = {}

    def _bump(self, group: str) -> int:
        self._versions[group] = self._versions.get(group, 0) + 1
        return self._versions[group]

    def _remove(self, group: str, connection_id: str) -> MemberChange | None:
        user_id, _ = self._rooms[group].pop(connection_id)
        users = self._users[group]
        before = len(users)
        users[user_id] -= 1
        if users[user_id] > 0:
            return None
        del users[user_id]
        change = MemberChange(group, user_id, False, True, before, len(users), self._bump(group))
        if not users:
            # Forget the empty group entirely, so group names used once cost nothing.
            del self._users[group], self._rooms[group], self._versions[group]
        return change

    async def join(self, group: str, user_id: str, connection_id: str, ttl: float) -> MemberChange:
        with self._lock:
            room = self._rooms.setdefault(group, {})
            users = self._users.setdefault(group, {})
            before = len(users)
            new = connection_id not in room
            room[connection_id] = (user_id, self._clock() + ttl)
            if new:
                users[user_id] = users.get(user_id, 0) + 1
            changed = new and users[user_id] == 1
            version = self._bump(group) if changed else self._versions.get(group, 0)
            return MemberChange(group, user_id, True, changed, before, len(users), version)

    async def leave(self, group: str, user_id: str, connection_id: str) -> MemberChange:
        with self._lock:
            count = len(self._users.get(group, {}))
            if connection_id not in self._rooms.get(group, {}):
                return MemberChange(
                    group, user_id, False, False, count, count, self._versions.get(group, 0)
                )
            change = self._remove(group, connection_id)
            if change is None:
                return MemberChange(
                    group, user_id, False, False, count, count, self._versions.get(group, 0)
                )
            return change

    async def members(self, group: str) -> tuple[list[str], int]:
        with self._lock:
            return list(self._users.get(group, {})), self._versions.get(group, 0)

    async def count(self, group: str) -> tuple[int, int]:
        with self._lock:
            return len(self._users.get(group, {})), self._versions.get(group, 0)

    async def refresh(self, memberships: Sequence[tuple[str, str, str]], ttl: float) -> None:
        with self._lock:
            expires = self._clock() + ttl
            for group, user_id, connection_id in memberships:
                room = self._rooms.get(group, {})
                if connection_id in room:
                    room[connection_id] = (user_id, expires)

    async def sweep(self, group_names: Iterable[str]) -> list[MemberChange]:
        changes = []
        with self._lock:
            now = self._clock()
            for group in group_names:
                room = self._rooms.get(group, {})
                expired = [cid for cid, (_, expiry) in room.items() if expiry <= now]
                for connection_id in expired[:_SWEEP_LIMIT]:
                    change = self._remove(group, connection_id)
                    if change is not None:
                        changes.append(change)
        return changes


# KEYS: 1 memberships (zset: encoded member -> lease expiry ms), 2 users (hash: user id ->
# connections), 3 version (counter).  Members are "<len(uid)>:<uid><cid>".
_PRELUDE = """
local KZ, KU, KV = KEYS[1], KEYS[2], KEYS[3]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function version() return tonumber(redis.call('GET', KV) or '0') end
local function keep(ttl)
  redis.call('PEXPIRE', KZ, ttl * 2)
  redis.call('PEXPIRE', KU, ttl * 2)
  redis.call('PEXPIRE', KV, ttl * 2)
end
local function drop(uid, m)
  if redis.call('ZREM', KZ, m) == 0 then return nil end
  local before = redis.call('HLEN', KU)
  if redis.call('HINCRBY', KU, uid, -1) > 0 then return nil end
  redis.call('HDEL', KU, uid)
  return {before, redis.call('HLEN', KU), redis.call('INCR', KV)}
end
"""

_JOIN = (
    _PRELUDE
    + """
local uid, cid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local before = redis.call('HLEN', KU)
local changed, v = 0, 0
if redis.call('ZADD', KZ, now_ms() + ttl, #uid .. ':' .. uid .. cid) == 1 then
  if redis.call('HINCRBY', KU, uid, 1) == 1 then changed = 1 end
end
if changed == 1 then v = redis.call('INCR', KV) else v = version() end
keep(ttl)
return {changed, before, redis.call('HLEN', KU), v}
"""
)

_LEAVE = (
    _PRELUDE
    + """
local uid, cid = ARGV[1], ARGV[2]
local r = drop(uid, #uid .. ':' .. uid .. cid)
if r then return {1, r[1], r[2], r[3]} end
local n = redis.call('HLEN', KU)
return {0, n, n, version()}
"""
)

_MEMBERS = (
    _PRELUDE
    + """
return {redis.call('HKEYS', KU), version()}
"""
)

_REFRESH = (
    _PRELUDE
    + """
local ttl = tonumber(ARGV[1])
local expiry = now_ms() + ttl
for i = 2, #ARGV do redis.call('ZADD', KZ, 'XX', expiry, ARGV[i]) end
keep(ttl)
return 0
"""
)

_SWEEP = (
    _PRELUDE
    + """
local expired = redis.call('ZRANGEBYSCORE', KZ, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, m in ipairs(expired) do
  local sep = string.find(m, ':', 1, true)
  local uid = string.sub(m, sep + 1, sep + tonumber(string.sub(m, 1, sep - 1)))
  local r = drop(uid, m)
  if r then
    out[#out + 1] = uid
    out[#out + 1] = r[1]
    out[#out + 1] = r[2]
    out[#out + 1] = r[3]
  end
end
return out
"""
)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRoomRegistry(BaseRoomRegistry):
    """Rooms in the presence backend's Redis, shared by every server process.

    Keys: ``{P}:room:<group>:c`` (sorted set of memberships scored by lease expiry, Redis
    server time), ``{P}:room:<group>:u`` (hash: user id -> connections in the group) and
    ``{P}:room:<group>:v`` (the group's version). All carry the backend's hash tag, so each
    script touches one slot, and all expire two leases after the last refresh.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._tag = "{" + backend.key_prefix + "}"

    def _keys(self, group: str) -> list[str]:
        base = f"{self._tag}:room:{group}"
        return [f"{base}:c", f"{base}:u", f"{base}:v"]

    async def _run(self, source: str, group: str, args: Sequence[Any], client: Any = None) -> Any:
        redis_client = self.backend.client()
        script = redis_client.register_script(source)
        return await self.backend._call(
            lambda: script(keys=self._keys(group), args=list(args), client=client)
        )

    async def join(self, group: str, user_id: str, connection_id: str, ttl: float) -> MemberChange:
        changed, before, count, version = await self._run(
            _JOIN, group, [user_id, connection_id, _ms(ttl)]
        )
        return MemberChange(
            group, user_id, True, bool(changed), int(before), int(count), int(version)
        )

    async def leave(self, group: str, user_id: str, connection_id: str) -> MemberChange:
        changed, before, count, version = await self._run(_LEAVE, group, [user_id, connection_id])
        return MemberChange(
            group, user_id, False, bool(changed), int(before), int(count), int(version)
        )

    async def members(self, group: str) -> tuple[list[str], int]:
        user_ids, version = await self._run(_MEMBERS, group, [])
        return [_str(uid) for uid in user_ids], int(version)

    async def count(self, group: str) -> tuple[int, int]:
        user_ids, version = await self.members(group)
        return len(user_ids), version

    async def refresh(self, memberships: Sequence[tuple[str, str, str]], ttl: float) -> None:
        by_group: dict[str, list[str]] = {}
        for group, user_id, connection_id in memberships:
            by_group.setdefault(group, []).append(f"{len(user_id)}:{user_id}{connection_id}")
        if not by_group:
            return
        client = self.backend.client()
        script = client.register_script(_REFRESH)

        async def run() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for group, members in by_group.items():
                    await script(keys=self._keys(group), args=[_ms(ttl), *members], client=pipe)
                await pipe.execute()

        await self.backend._call(run)

    async def sweep(self, group_names: Iterable[str]) -> list[MemberChange]:
        changes = []
        for group in group_names:
            result = await self._run(_SWEEP, group, [_SWEEP_LIMIT])
            for i in range(0, len(result), 4):
                changes.append(
                    MemberChange(
                        group,
                        _str(result[i]),
                        False,
                        True,
                        int(result[i + 1]),
                        int(result[i + 2]),
                        int(result[i + 3]),
                    )
                )
        return changes


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


_registries: weakref.WeakKeyDictionary[BasePresenceBackend, BaseRoomRegistry] = (
    weakref.WeakKeyDictionary()
)
_registries_lock = threading.Lock()


def get_registry() -> BaseRoomRegistry:
    """The room registry that goes with the configured presence backend.

    Redis when the backend is the Redis backend, this process's memory otherwise. One
    registry per backend instance, so switching backends (``override_settings``) also
    switches registries.
    """
    backend = get_backend()
    with _registries_lock:
        registry = _registries.get(backend)
        if registry is None:
            from .backends.redis import RedisBackend

            if isinstance(backend, RedisBackend):
                registry = RedisRoomRegistry(backend)
            else:
                registry = MemoryRoomRegistry()
            _registries[backend] = registry
        return registry


# -- announcing member changes -------------------------------------------------------------


def member_limit() -> int:
    """``GROUP_PRESENCE_MAX_MEMBERS``: above it a group reports a count only."""
    return int(number_setting("GROUP_PRESENCE_MAX_MEMBERS"))


async def announce(change: MemberChange, *, origin: str = "") -> None:
    """Tell a group's connections that a user joined or left it.

    Nothing is sent while the group is over ``GROUP_PRESENCE_MAX_MEMBERS`` before and
    after the change (count-only mode pushes nothing, so a large group costs no fan-out
    per join); the changes that cross the limit are sent so that consumers switch mode.
    ``origin`` is the channel name of the connection that caused the change, which does
    not hear about itself.
    """
    if not change.changed or min(change.count_before, change.count) > member_limit():
        return
    layer = get_channel_layer(presence_settings.CHANNEL_LAYER)
    if layer is None:
        return
    from .services.messaging import wire_user_id

    try:
        await layer.group_send(
            groups.client_group(change.group),
            {
                "type": MEMBER_EVENT,
                "group": change.group,
                "user_id": wire_user_id(change.user_id),
                "joined": change.joined,
                "count_before": change.count_before,
                "count": change.count,
                "version": change.version,
                "origin": origin,
            },
        )
    except Exception:
        logger.exception("Could not announce a member change of group %r", change.group)


# -- the per-process refresher -------------------------------------------------------------


class RoomTracker:
    """The memberships one event loop holds, and the task that refreshes and sweeps them."""

    def __init__(self) -> None:
        # (group, connection id) -> user id
        self.memberships: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, group: str, user_id: str, connection_id: str) -> None:
        """Keep refreshing a membership; starts the periodic task if needed."""
        self.memberships[(group, connection_id)] = user_id
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def untrack(self, group: str, connection_id: str) -> None:
        """Stop refreshing a membership (before removing it from the registry)."""
        self.memberships.pop((group, connection_id), None)

    async def _run(self) -> None:
        while self.memberships:
            await asyncio.sleep(number_setting("HEARTBEAT_INTERVAL", allow_zero=False))
            try:
                await self.beat()
            except Exception:
                logger.exception("Refreshing group memberships failed; retrying in one interval")

    async def beat(self) -> None:
        """Refresh every membership held here, then sweep and announce expired ones."""
        registry = get_registry()
        held = [(group, user, cid) for (group, cid), user in self.memberships.items()]
        await registry.refresh(held, number_setting("CONNECTION_TTL", allow_zero=False))
        for change in await registry.sweep({group for group, _, _ in held}):
            await announce(change)


_trackers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomTracker] = (
    weakref.WeakKeyDictionary()
)


def get_tracker() -> RoomTracker:
    """The room tracker of the running event loop."""
    loop = asyncio.get_running_loop()
    tracker = _trackers.get(loop)
    if tracker is None:
        tracker = _trackers[loop] = RoomTracker()
    return tracker
