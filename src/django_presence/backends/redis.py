"""Redis presence backend, for production and for many server processes.

Layout: every key carries the hash tag ``{<KEY_PREFIX>}``, so each script touches one hash
slot and the backend works on Redis Cluster as well as on a single server or Sentinel.

- ``{P}:procs``    sorted set: server -> lease expiry (ms, Redis server time). A connection
  added with a server is *filed* under it and lives as long as the server's lease: one
  renewal per server per interval, whatever it holds. ``{P}:pconf`` set: the servers
  whose lease ``renew()`` took (confirmed); a lease ``store()`` made is not, so the
  server's next renewal tells it to file again what it holds.
- ``{P}:pc:<server>`` set of the connections filed under the server, member ``<uid>``
  and the first 8 bytes of ``sha1(cid)``, raw (the user's hash has the id in full).
- ``{P}:retired`` sorted set: ``<server>\x1f<n>`` -> when the connections of the retired
  filing ``{P}:pr:<server>\x1f<n>`` may be removed (ms); ``{P}:rseq`` numbers them. A
  filing is retired (renamed, O(1)) when its server's lease expired (removable at once)
  or when the server renews without holding a confirmed lease or rotates (removable a
  lease from now). The sweep removes a retired connection unless it was filed again
  under its server meanwhile, at most ``limit`` examined per call.
- ``{P}:leases``   sorted set: the connections with a lease of their own (added without a
  server, and closing leases), member ``<len(uid)>:<uid><cid>``, score = lease expiry
  (ms, Redis server time).
- ``{P}:u:<uid>``  hash: connection id -> ``<opened ms>|<server ref>``; one per online
  user. The server ref is 10 hex digits of ``sha1(server)`` ('' for a connection with a
  lease of its own); ``{P}:pname`` hash: server ref -> server name, while the server
  has a lease or a filing to sweep.
  Connection ids are stored packed (everywhere in these keys): a channels_redis channel
  name as ``~`` and base64url (44 bytes instead of 74, see ``_pack_cid``), so that the
  hash stays a compact listpack.
- ``{P}:online``   hash: user id -> the seq of the user's last transition, one entry per
  online user (``{P}:tseq`` below has it once they are offline).
- ``{P}:closing``  hash: user id -> connection id of the user's grace-period lease (at most
  one: adding a connection drops it).
- ``{P}:seq``      counter of transitions, never below the server time in microseconds so
  that it keeps increasing after Redis lost its data; ``{P}:tseq`` hash: user id -> last
  transition seq of an offline user, kept ``transition_retention`` seconds (a user's seq
  is the larger of the two hashes': processes of earlier versions keep an online
  user's seq in ``tseq`` and the time they went online in ``online``);
  ``{P}:offline`` sorted set: user id -> ms since which the user is offline, for pruning
  ``tseq`` (so neither grows with every user who was ever online).
- ``{P}:sweeplock`` the sweep lock.
- ``{P}:a:<uid>`` hash: the user's availability, only for users who have any: ``st``
  status (busy or invisible; none: available), ``tx`` its text, ``un`` its expiry (ms);
  ``la`` last activity (ms) and ``aw`` when the user turns away (ms), while online;
  ``p`` the public presence last announced, while online and when it is not plain
  ``online``; ``d:<first 12 hex digits of sha1(cid)>`` a connection's data
  (``<keep 0|1><len>:<device><len>:<activity><data>``, lengths in bytes). Offline users
  keep only ``st``/``tx``/``un``.
- ``{P}:adue`` sorted set: user id -> when their presence must be derived again (away
  time or status expiry, ms), taken by the sweep.
- ``{P}:room:<group>:c`` sorted set of the group's memberships (member
  ``<len(uid)>:<uid><member id>``, score = lease expiry, ms), ``{P}:room:<group>:u`` hash:
  user id -> memberships, ``{P}:room:<group>:v`` the group's version. They expire two
  leases after the last join or refresh, and go as soon as the group is empty.
  ``{P}:room:<group>:o`` the group's occupied flag (``room_occupied``), with the same
  expiry, but kept when the group empties until ``room_settle`` takes it.
- ``{P}:s:<stream>:m`` hash: the stream's epoch ``e``, latest offset ``o`` and history
  ``ttl`` ``t`` (ms, as last published, for ``stream_due``); expires
  ``meta_ttl`` after the last publication (or after the read that created the epoch).
- ``{P}:s:<stream>:l`` the history, a list of ``<offset>:<publish ms>:<payload>`` (why a
  list: see ``_STREAM_COMMON``): trimmed to ``size`` entries by each publication, expiring
  ``ttl`` after the last one; older entries still held are skipped on read.
- ``{P}:s:<stream>:a`` hash: user id -> ``<delivered>:<acked>``, with the meta's expiry.
- ``{P}:due`` sorted set of tracked publications, score = deadline (ms, Redis server
  time), member ``<len>:<stream><len>:<uid><len>:<epoch><offset>:<publish ms>`` (lengths
  in bytes). A new epoch deletes whatever history and cursors outlived the old meta.

Every mutation is one Lua script, so adding, removing and deciding the transition are one
atomic step. Leases use ``TIME`` on the Redis server, never a web server's clock.

Round trips: one per connect and per disconnect (plus one read when the service writes a
transition to the DB), and one per heartbeat interval per server process, whatever the
number of connections it holds (``renew_server_and_sweep``); filing every connection
again (after a lost lease) is one more round trip, scripts of 100 pairs pipelined.

Tested with redis-py 8.1.0 and channels_redis 4.3.0, against Redis server 7.0.15 and
6.0.9. redis-py 8 changed two defaults that matter here, so this backend sets both
itself: ``socket_timeout`` (5 s) and a *blocking* pool (``max_connections`` 100, waiting up
to ``pool_timeout`` 10 s instead of raising ``MaxConnectionsError`` in a burst).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import threading
import types
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis as syncredis
from redis import asyncio as aioredis
from redis import exceptions as redis_exceptions

from ..exceptions import BackendUnavailable
from .base import (
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

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean "Redis can't be reached now": raised as BackendUnavailable. A replica, or
# a master demoted by a failover, refuses writes until the client reaches the new master:
# unavailable for now, like a dropped connection.
_UNAVAILABLE = (
    redis_exceptions.ConnectionError,
    redis_exceptions.TimeoutError,
    redis_exceptions.ReadOnlyError,
)

_TRANSITIONS = {0: Transition.NONE, 1: Transition.ONLINE, 2: Transition.OFFLINE}
# What the add script answers for a connection over the user's limit.
_REFUSED = 3

# The clock and the member encoding, shared by the presence and the room scripts.
_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function member(uid, cid) return #uid .. ':' .. uid .. cid end
local function split(m)
  local sep = string.find(m, ':', 1, true)
  local n = tonumber(string.sub(m, 1, sep - 1))
  return string.sub(m, sep + 1, sep + n), string.sub(m, sep + n + 1)
end
"""

# KEYS: 1 leases, 2 online, 3 seq, 4 tseq, 5 closing, 6 sweeplock, 7 offline, 8 adue,
# 9 procs, 10 pconf, 11 retired. ARGV[1]: user key prefix.
_PRELUDE = (
    _COMMON
    + """
local K_LEASES, K_ONLINE, K_SEQ, K_TSEQ, K_CLOSING = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_OFFLINE, K_DUE = KEYS[7], KEYS[8]
local K_PROCS, K_PCONF, K_RETIRED = KEYS[9], KEYS[10], KEYS[11]
local UP = ARGV[1]
local BASE = string.sub(UP, 1, -3)
local UA, PC, PR = BASE .. 'a:', BASE .. 'pc:', BASE .. 'pr:'
local K_PNAME = BASE .. 'pname'
-- A connection's record names its server by a reference: 10 hex digits of the digest of
-- the server's name ('' for none), which K_PNAME maps back to the name while the server
-- has a lease or connections to sweep. Server names are host:pid and a suffix, 30 to
-- 60 bytes, and each connection's record has one.
local function sref(s)
  if s == '' then return '' end
  return string.sub(redis.sha1hex(s), 1, 10)
end
-- The name of the server a record's reference stands for; a record written by an
-- earlier version holds the name itself, which has no entry and is returned as it is.
local function sname(ref)
  if ref == '' then return '' end
  return redis.call('HGET', K_PNAME, ref) or ref
end
-- The reference of the server a connection is filed under, from its record (''; a lease
-- of its own).
local function server_of(v) return string.sub(v, string.find(v, '|', 1, true) + 1) end
-- Extend server s's lease to at least until_ms; a lease made here is not confirmed (only
-- renew() confirms one, and tells the process to file again what it holds).
local function extend_server(s, until_ms)
  local e = redis.call('ZSCORE', K_PROCS, s)
  if not e then
    redis.call('HSET', K_PNAME, sref(s), s)
    redis.call('SREM', K_PCONF, s)
    redis.call('ZADD', K_PROCS, until_ms, s)
  elseif tonumber(e) < until_ms then
    redis.call('ZADD', K_PROCS, until_ms, s)
  end
end
-- A connection's member in its server's filing: the user id and the first 8 bytes of the
-- SHA-1 of the connection id, raw: a filing holds one member per connection, and one of
-- 14 bytes (a 6-digit user id) takes Redis 16 bytes where the former ``<len>:<uid>`` and
-- 16 hex digits took 32. The user's record has the id in full.
local function fmember(uid, cid)
  local h, b = redis.sha1hex(cid), {}
  for i = 1, 8 do b[i] = tonumber(string.sub(h, 2 * i - 1, 2 * i), 16) end
  return uid .. string.char(unpack(b))
end
local HEX8 = string.rep('%02x', 8)
-- The connection of the filing member m: its user, id and record (nil, nil when the user
-- has no such connection any more). The digest is compared in hex: one conversion per
-- member rather than one per connection of the user.
local function fcid(m)
  local uid, tail = string.sub(m, 1, -9), string.format(HEX8, string.byte(m, -8, -1))
  local entries = redis.call('HGETALL', UP .. uid)
  for i = 1, #entries, 2 do
    if string.sub(redis.sha1hex(entries[i]), 1, 16) == tail then
      return uid, entries[i], entries[i + 1]
    end
  end
  return uid, nil, nil
end
-- A connection filed under a server lives as long as the server's lease; with no server,
-- it has a lease of its own in K_LEASES.
local function file(uid, cid, s, until_ms)
  if s == '' then
    redis.call('ZADD', K_LEASES, until_ms, member(uid, cid))
  else
    redis.call('ZREM', K_LEASES, member(uid, cid))
    redis.call('SADD', PC .. s, fmember(uid, cid))
    extend_server(s, until_ms)
  end
end
local function unfile(uid, cid, s)
  redis.call('ZREM', K_LEASES, member(uid, cid))
  if s ~= '' then redis.call('SREM', PC .. s, fmember(uid, cid)) end
end
-- Retire what server s has filed: a sweep removes it from when_ms on, but for what is
-- filed under s again by then. RENAME is O(1) whatever the filing holds.
local function retire(s, when_ms)
  if redis.call('EXISTS', PC .. s) == 0 then return end
  local name = s .. '\\31' .. redis.call('INCR', BASE .. 'rseq')
  redis.call('RENAME', PC .. s, PR .. name)
  redis.call('ZADD', K_RETIRED, when_ms, name)
end
-- Public presence signatures: state, devices, activities (\\31-separated), status text,
-- \\30 between.
local PLAIN, OFF = 'online\\30\\30\\30', 'offline\\30\\30\\30'
-- Transition numbers never go back, even when Redis restarted empty and K_SEQ is gone:
-- the counter is floored at the server time in microseconds (below 2^53, so the number
-- survives Lua's doubles and JavaScript clients), and INCR keeps it unique.
-- A user's last seq is the value of their entry in K_ONLINE while online (one entry per
-- online user rather than two), and in K_TSEQ once offline, in K_OFFLINE's care: sweep()
-- forgets it after the retention period.
local function bump_seq(uid, online)
  local s = redis.call('INCR', K_SEQ)
  local t = redis.call('TIME')
  local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if s < floor then
    s = floor
    redis.call('SET', K_SEQ, string.format('%d', s))
  end
  redis.call('HSET', online and K_ONLINE or K_TSEQ, uid, string.format('%d', s))
  return s, floor
end
local function next_seq(uid, went_online)
  local s, floor = bump_seq(uid, went_online)
  if went_online then
    redis.call('ZREM', K_OFFLINE, uid)
    redis.call('HDEL', K_TSEQ, uid)
  else
    redis.call('ZADD', K_OFFLINE, math.floor(floor / 1000), uid)
  end
  return s
end
-- The user's last seq, '0' if none (see K_TSEQ in the module's docstring for why both).
local function seq_of(uid)
  local a = redis.call('HGET', K_ONLINE, uid)
  local b = redis.call('HGET', K_TSEQ, uid)
  if a and (not b or tonumber(a) > tonumber(b)) then return a end
  return b or '0'
end
-- The availability hash's field of a connection's data: short, so that the hash of a
-- user with a device stays a compact listpack (field names up to 64 bytes).
local function dk(cid) return 'd:' .. string.sub(redis.sha1hex(cid), 1, 12) end
local function parse_data(v)
  local sep = string.find(v, ':', 2, true)
  local n = tonumber(string.sub(v, 2, sep - 1))
  local device = string.sub(v, sep + 1, sep + n)
  local p = sep + n + 1
  sep = string.find(v, ':', p, true)
  n = tonumber(string.sub(v, p, sep - 1))
  return string.sub(v, 1, 1) == '1', device, string.sub(v, sep + 1, sep + n)
end
-- The one derivation of a user's state (docs/presence-states.md): the public presence's
-- signature, the state the user sees of themselves, the public state, the status.
local function derive(uid, now)
  local ak = UA .. uid
  local online = redis.call('HEXISTS', K_ONLINE, uid) == 1
  if redis.call('EXISTS', ak) == 0 then
    if online then return PLAIN, 'online', 'online', false end
    return OFF, 'offline', 'offline', false
  end
  local f = redis.call('HMGET', ak, 'st', 'un', 'aw', 'tx')
  local st = f[1]
  if f[2] and tonumber(f[2]) <= now then
    redis.call('HDEL', ak, 'st', 'tx', 'un')
    st = false
    f[4] = false
  end
  if not online then return OFF, 'offline', 'offline', st end
  local devices, activities, seen, keep = {}, {}, {}, false
  for _, cid in ipairs(redis.call('HKEYS', UP .. uid)) do
    local v = redis.call('HGET', ak, dk(cid))
    if v then
      local k, device, activity = parse_data(v)
      keep = keep or k
      if device ~= '' and not seen['d' .. device] then
        seen['d' .. device] = true
        devices[#devices + 1] = device
      end
      if activity ~= '' and not seen['a' .. activity] then
        seen['a' .. activity] = true
        activities[#activities + 1] = activity
      end
    end
  end
  local state = 'online'
  if st == 'busy' then
    state = 'busy'
  elseif not keep and f[3] and tonumber(f[3]) <= now then
    state = 'away'
  end
  if st == 'invisible' then return OFF, state, 'offline', st end
  table.sort(devices)
  table.sort(activities)
  local sig = state .. '\\30' .. table.concat(devices, '\\31') .. '\\30'
  sig = sig .. table.concat(activities, '\\31') .. '\\30' .. (f[4] or '')
  return sig, state, state, st
end
-- Derive the user's presence after a call; went: 0 no transition, 1 online, 2 offline.
-- A new seq when the user went online or offline or when the public presence changed
-- (shared by both when both happened). Returns {signature if it changed else '', seq,
-- hidden (1: the user is invisible)}.
local function announce(uid, now, went)
  local public, _, pstate, st = derive(uid, now)
  local ak = UA .. uid
  local online = went == 1 or (went == 0 and redis.call('HEXISTS', K_ONLINE, uid) == 1)
  local old = OFF
  if went == 2 or (went == 0 and online) then old = redis.call('HGET', ak, 'p') or PLAIN end
  local seq = 0
  if went == 1 then
    seq = next_seq(uid, true)
  elseif went == 2 then
    seq = next_seq(uid, false)
  elseif public ~= old then
    seq = bump_seq(uid, online)
  end
  if online then
    if public == PLAIN then
      redis.call('HDEL', ak, 'p')
    else
      redis.call('HSET', ak, 'p', public)
    end
    local f = redis.call('HMGET', ak, 'un', 'aw')
    local due = false
    if f[1] and tonumber(f[1]) > now then due = tonumber(f[1]) end
    if pstate == 'online' and f[2] and tonumber(f[2]) > now then
      local aw = tonumber(f[2])
      if not due or aw < due then due = aw end
    end
    if due then redis.call('ZADD', K_DUE, due, uid) else redis.call('ZREM', K_DUE, uid) end
  else
    redis.call('ZREM', K_DUE, uid)
    if redis.call('EXISTS', ak) == 1 then
      for _, k in ipairs(redis.call('HKEYS', ak)) do
        if k ~= 'st' and k ~= 'tx' and k ~= 'un' then redis.call('HDEL', ak, k) end
      end
    end
  end
  local changed = ''
  if public ~= old then changed = public end
  return {changed, seq, (st == 'invisible') and 1 or 0}
end
local function open_count(uid)
  return redis.call('HLEN', UP .. uid) - redis.call('HEXISTS', K_CLOSING, uid)
end
local function store(uid, cid, ttl, server, now, data, idle)
  local uk = UP .. uid
  local ak = UA .. uid
  local was = redis.call('HEXISTS', K_ONLINE, uid)
  local opened, ref = now, sref(server)
  local old = redis.call('HGET', uk, cid)
  if old then
    local sep = string.find(old, '|', 1, true)
    opened = tonumber(string.sub(old, 1, sep - 1))
    if server == '' then
      ref = string.sub(old, sep + 1)
      server = sname(ref)
    end
  end
  redis.call('HSET', uk, cid, opened .. '|' .. ref)
  file(uid, cid, server, now + ttl)
  local closing = redis.call('HGET', K_CLOSING, uid)
  if closing then
    redis.call('HDEL', K_CLOSING, uid)
    if closing ~= cid then
      redis.call('HDEL', uk, closing)
      redis.call('ZREM', K_LEASES, member(uid, closing))
      local inherited = redis.call('HGET', ak, dk(closing))
      if inherited then
        redis.call('HDEL', ak, dk(closing))
        if not data then data = inherited end
      end
    end
  end
  if data then redis.call('HSET', ak, dk(cid), data) end
  if idle > 0 then redis.call('HSET', ak, 'la', now, 'aw', now + idle) end
  local count = redis.call('HLEN', uk)
  local went = 0
  if was == 0 then
    -- Its value, the seq, is set by announce() (next_seq).
    redis.call('HSET', K_ONLINE, uid, '0')
    went = 1
  end
  local a = announce(uid, now, went)
  return {went, count, a[2], a[1], a[3]}
end
"""
)

# The connect and disconnect scripts answer with one string (see _unpacked): redis-py reads a
# reply of five elements line by line, 108-144 us of client CPU per call in pipelines of 32
# against 77-89 us for one string, on every connect and close.
_ONE_STRING = """
local function one_string(r)
  return string.format('%d %d %d %d ', r[1], r[2], r[3], r[5]) .. r[4]
end
"""

# ARGV[6]: the most open connections the user may hold (0: no limit); over it, {3, count}.
# ARGV[7]: the connection's data, encoded ('' none); ARGV[8]: the idle period (ms, 0 none).
_ADD = (
    _PRELUDE
    + _ONE_STRING
    + """
local uid, cid, limit = ARGV[2], ARGV[3], tonumber(ARGV[6])
if limit > 0 and redis.call('HEXISTS', UP .. uid, cid) == 0 then
  local count = open_count(uid)
  if count >= limit then return one_string({3, count, 0, '', 0}) end
end
local data = ARGV[7]
if data == '' then data = false end
return one_string(
  store(uid, cid, tonumber(ARGV[4]), ARGV[5], now_ms(), data, tonumber(ARGV[8])))
"""
)

_REMOVE = (
    _PRELUDE
    + _ONE_STRING
    + """
local uid, cid, grace = ARGV[2], ARGV[3], tonumber(ARGV[4])
local uk = UP .. uid
if redis.call('HEXISTS', uk, cid) == 0 or redis.call('HGET', K_CLOSING, uid) == cid then
  return one_string({0, open_count(uid), 0, '', 0})
end
local n = redis.call('HLEN', uk)
unfile(uid, cid, sname(server_of(redis.call('HGET', uk, cid))))
if grace > 0 and n == 1 then
  -- A closing lease is the connection's own, whatever its server.
  redis.call('HSET', K_CLOSING, uid, cid)
  redis.call('ZADD', K_LEASES, now_ms() + grace, member(uid, cid))
  return one_string({0, 0, 0, '', 0})
end
redis.call('HDEL', uk, cid)
redis.call('HDEL', UA .. uid, dk(cid))
local went = 0
if n == 1 then
  redis.call('HDEL', K_ONLINE, uid)
  went = 2
end
local a = announce(uid, now_ms(), went)
return one_string({went, n - 1, a[2], a[1], a[3]})
"""
)

# heartbeat(): extend the leases of the pairs in ARGV[first..] (file those with a server
# under it again, and extend its lease); store again the missing ones.
_HEARTBEAT_FN = """
local function heartbeat(ttl, server, first)
  local now = now_ms()
  local restored, extended, own = {}, {}, sref(server)
  for i = first, #ARGV, 2 do
    local uid, cid = ARGV[i], ARGV[i + 1]
    local v = redis.call('HGET', UP .. uid, cid)
    if v and redis.call('HGET', K_CLOSING, uid) ~= cid then
      local s = server_of(v)
      if s == own then s = server elseif s ~= '' then s = sname(s) end
      if s == '' then
        redis.call('ZADD', K_LEASES, 'XX', now + ttl, member(uid, cid))
      else
        redis.call('SADD', PC .. s, fmember(uid, cid))
        if not extended[s] then
          extended[s] = true
          extend_server(s, now + ttl)
        end
      end
    else
      local r = store(uid, cid, ttl, server, now, false, 0)
      restored[#restored + 1] = uid
      restored[#restored + 1] = cid
      for j = 1, 5 do restored[#restored + 1] = r[j] end
    end
  end
  return restored
end
"""

# sweep(): {-1} when another process holds the lock, else {removed, more (1: it stopped at
# ``limit`` with more waiting), then per change: uid, transition, seq, presence signature,
# hidden}. Servers whose lease expired are dead: what they filed is retired, to be removed
# now. Then it examines up to ``limit`` connections: those of retired filings whose time
# came (removed unless filed again), then expired leases of their own. It also derives
# again the presence of up to ``limit`` users whose away time or status expiry passed,
# and forgets the last seq of up to ``limit`` users offline for ``retention_ms``.
_SWEEP_FN = """
local function sweep(limit, lock_ms, token, retention_ms)
  if lock_ms > 0 and not redis.call('SET', KEYS[6], token, 'NX', 'PX', lock_ms) then
    return {-1}
  end
  local now = now_ms()
  local gone =
    redis.call('ZRANGEBYSCORE', K_OFFLINE, '-inf', now - retention_ms, 'LIMIT', 0, limit)
  for _, uid in ipairs(gone) do
    redis.call('ZREM', K_OFFLINE, uid)
    if redis.call('HEXISTS', K_ONLINE, uid) == 0 then redis.call('HDEL', K_TSEQ, uid) end
  end
  local out = {0, 0}
  local function add(uid, went, a)
    out[#out + 1] = uid
    out[#out + 1] = went
    out[#out + 1] = a[2]
    out[#out + 1] = a[1]
    out[#out + 1] = a[3]
  end
  local removed, examined, still, order = 0, 0, {}, {}
  -- Remove a connection (closing: it was the user's closing lease). A user still online
  -- is derived again only when the connection had data (a device, an activity): without
  -- any, what others see of them cannot have changed.
  local function drop(uid, cid, closing)
    local uk = UP .. uid
    redis.call('HDEL', uk, cid)
    local had = redis.call('HDEL', UA .. uid, dk(cid))
    if closing then redis.call('HDEL', K_CLOSING, uid) end
    removed = removed + 1
    if redis.call('HLEN', uk) == 0 and redis.call('HDEL', K_ONLINE, uid) == 1 then
      add(uid, 2, announce(uid, now, 2))
    elseif had == 1 and not still[uid] then
      still[uid] = true
      order[#order + 1] = uid
    end
  end
  for _, s in ipairs(redis.call('ZRANGEBYSCORE', K_PROCS, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', K_PROCS, s)
    redis.call('SREM', K_PCONF, s)
    if redis.call('EXISTS', PC .. s) == 0 then redis.call('HDEL', K_PNAME, sref(s)) end
    retire(s, now)
  end
  while examined < limit do
    local due = redis.call('ZRANGEBYSCORE', K_RETIRED, '-inf', now, 'LIMIT', 0, 1)
    if #due == 0 then break end
    local name = due[1]
    local s = string.sub(name, 1, string.find(name, '\\31', 1, true) - 1)
    local ref = sref(s)
    for _, m in ipairs(redis.call('SPOP', PR .. name, limit - examined)) do
      examined = examined + 1
      local uid, cid, v = fcid(m)
      -- (A record may name the server in full: written before references.)
      local sv = v and server_of(v)
      if v and (sv == ref or sv == s) and redis.call('HGET', K_CLOSING, uid) ~= cid
        and redis.call('SISMEMBER', PC .. s, m) == 0 then
        drop(uid, cid, false)
      end
    end
    if redis.call('EXISTS', PR .. name) == 0 then
      redis.call('ZREM', K_RETIRED, name)
      -- A dead server's name is not needed once what it filed is gone.
      if not redis.call('ZSCORE', K_PROCS, s) then redis.call('HDEL', K_PNAME, ref) end
    end
  end
  if examined < limit then
    local expired =
      redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now, 'LIMIT', 0, limit - examined)
    for _, m in ipairs(expired) do
      examined = examined + 1
      local uid, cid = split(m)
      redis.call('ZREM', K_LEASES, m)
      drop(uid, cid, redis.call('HGET', K_CLOSING, uid) == cid)
    end
  end
  out[1] = removed
  if examined >= limit then
    for _, k in ipairs({K_PROCS, K_RETIRED, K_LEASES}) do
      if #redis.call('ZRANGEBYSCORE', k, '-inf', now, 'LIMIT', 0, 1) > 0 then out[2] = 1 end
    end
  end
  for _, uid in ipairs(order) do
    local a = announce(uid, now, 0)
    if a[1] ~= '' then add(uid, 0, a) end
  end
  for _, uid in ipairs(redis.call('ZRANGEBYSCORE', K_DUE, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', K_DUE, uid)
    local a = announce(uid, now, 0)
    if a[1] ~= '' then add(uid, 0, a) end
  end
  return out
end
"""

# renew(): extend server s's lease; 1 if it was held and confirmed, else 0 (then what s had
# filed is retired, ``ttl`` from now: the process files again what it holds).
_RENEW_FN = """
local function renew(s, ttl, rotate)
  local now = now_ms()
  local held = redis.call('ZSCORE', K_PROCS, s) and redis.call('SISMEMBER', K_PCONF, s) == 1
  if rotate or not held then retire(s, now + ttl) end
  if not held then redis.call('HSET', K_PNAME, sref(s), s) end
  redis.call('ZADD', K_PROCS, now + ttl, s)
  redis.call('SADD', K_PCONF, s)
  if held and not rotate then return 1 end
  return 0
end
"""

_HEARTBEAT = (
    _PRELUDE
    + _HEARTBEAT_FN
    + """
return heartbeat(tonumber(ARGV[2]), ARGV[3], 4)
"""
)

_SWEEP = (
    _PRELUDE
    + _SWEEP_FN
    + """
return sweep(tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]))
"""
)

# One round trip per heartbeat interval: the process's own leases first, so that they are
# never swept, then everybody's expired ones.
_HEARTBEAT_AND_SWEEP = (
    _PRELUDE
    + _HEARTBEAT_FN
    + _SWEEP_FN
    + """
local restored = heartbeat(tonumber(ARGV[2]), ARGV[3], 8)
return {restored, sweep(tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]))}
"""
)

_RENEW = (
    _PRELUDE
    + _RENEW_FN
    + """
return renew(ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1')
"""
)

# One round trip per heartbeat interval, whatever the process holds: its lease first, so
# that its connections are never swept, then everybody's expired ones.
_RENEW_AND_SWEEP = (
    _PRELUDE
    + _RENEW_FN
    + _SWEEP_FN
    + """
local held = renew(ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1')
return {held, sweep(tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]))}
"""
)

_REMOVE_USER = (
    _PRELUDE
    + """
local uid = ARGV[2]
local uk = UP .. uid
local records = redis.call('HGETALL', uk)
local cids = {}
for i = 1, #records, 2 do
  cids[#cids + 1] = records[i]
  unfile(uid, records[i], sname(server_of(records[i + 1])))
end
redis.call('DEL', uk)
redis.call('HDEL', K_CLOSING, uid)
if redis.call('HDEL', K_ONLINE, uid) == 1 then
  local a = announce(uid, now_ms(), 2)
  return {#cids, 2, a[2], a[1], a[3]}
end
return {#cids, 0, 0, '', 0}
"""
)

# ARGV[2..4]: user, connection, the data encoded.
_SET_DATA = (
    _PRELUDE
    + """
local uid, cid = ARGV[2], ARGV[3]
if redis.call('HEXISTS', UP .. uid, cid) == 0 or redis.call('HGET', K_CLOSING, uid) == cid then
  return {0, open_count(uid), 0, '', 0}
end
redis.call('HSET', UA .. uid, dk(cid), ARGV[4])
local a = announce(uid, now_ms(), 0)
return {0, open_count(uid), a[2], a[1], a[3]}
"""
)

# ARGV[2]: the idle period (ms, 0: never away); then (user, ms since last activity) pairs.
# Returns, per user whose public presence changed: uid, 0, seq, signature, hidden.
_TOUCH = (
    _PRELUDE
    + """
local now, idle, out = now_ms(), tonumber(ARGV[2]), {}
for i = 3, #ARGV, 2 do
  local uid = ARGV[i]
  if redis.call('HEXISTS', K_ONLINE, uid) == 1 then
    local when = now - math.max(0, tonumber(ARGV[i + 1]))
    local ak = UA .. uid
    local la = redis.call('HGET', ak, 'la')
    if not la or tonumber(la) < when then
      redis.call('HSET', ak, 'la', when)
      if idle > 0 then
        redis.call('HSET', ak, 'aw', when + idle)
      else
        redis.call('HDEL', ak, 'aw')
      end
      local a = announce(uid, now, 0)
      if a[1] ~= '' then
        out[#out + 1] = uid
        out[#out + 1] = 0
        out[#out + 1] = a[2]
        out[#out + 1] = a[1]
        out[#out + 1] = a[3]
      end
    end
  end
end
return out
"""
)

# ARGV[2..5]: user, status, text, ttl (ms; -1: none).
_SET_STATUS = (
    _PRELUDE
    + """
local uid, status, text, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local ak, now = UA .. uid, now_ms()
if status == 'available' then
  redis.call('HDEL', ak, 'st')
else
  redis.call('HSET', ak, 'st', status)
end
if text == '' then redis.call('HDEL', ak, 'tx') else redis.call('HSET', ak, 'tx', text) end
if ttl >= 0 and (status ~= 'available' or text ~= '') then
  redis.call('HSET', ak, 'un', now + ttl)
else
  redis.call('HDEL', ak, 'un')
end
local a = announce(uid, now, 0)
return {0, open_count(uid), a[2], a[1], a[3]}
"""
)

# ARGV[2..]: users. Per user: {online, seq, signature, state, status, text, until, last
# active, {cid, data, ...}} ('' for what is not set).
_AVAILABILITY = (
    _PRELUDE
    + """
local now, out = now_ms(), {}
for i = 2, #ARGV do
  local uid = ARGV[i]
  local public, state = derive(uid, now)
  local ak = UA .. uid
  local f = redis.call('HMGET', ak, 'st', 'tx', 'un', 'la')
  local data = {}
  for _, cid in ipairs(redis.call('HKEYS', UP .. uid)) do
    data[#data + 1] = cid
    data[#data + 1] = redis.call('HGET', ak, dk(cid)) or ''
  end
  out[#out + 1] = {
    redis.call('HEXISTS', K_ONLINE, uid), seq_of(uid), public,
    state, f[1] or '', f[2] or '', f[3] or '', f[4] or '', data,
  }
end
return out
"""
)

_SNAPSHOT = """
local online = redis.call('HMGET', KEYS[2], unpack(ARGV, 2))
local seqs = redis.call('HMGET', KEYS[4], unpack(ARGV, 2))
return {online, seqs}
"""

_USER_CONNECTIONS = (
    _PRELUDE
    + """
local uid = ARGV[2]
local entries = redis.call('HGETALL', UP .. uid)
local closing = redis.call('HGET', K_CLOSING, uid)
local out = {}
for i = 1, #entries, 2 do
  local cid, v = entries[i], entries[i + 1]
  local s = sname(server_of(v))
  out[#out + 1] = cid
  out[#out + 1] = string.sub(v, 1, string.find(v, '|', 1, true)) .. s
  local own_lease = closing == cid or s == ''
  local m = own_lease and member(uid, cid) or fmember(uid, cid)
  local expiry = false
  if own_lease then
    expiry = redis.call('ZSCORE', K_LEASES, m)
  elseif redis.call('SISMEMBER', PC .. s, m) == 1 then
    expiry = redis.call('ZSCORE', K_PROCS, s)
  else
    -- Retired, not filed again: when a sweep may remove it (the earliest, if twice).
    for _, name in ipairs(redis.call('ZRANGE', K_RETIRED, 0, -1)) do
      if not expiry and string.sub(name, 1, #s + 1) == s .. '\\31'
        and redis.call('SISMEMBER', PR .. name, m) == 1 then
        expiry = redis.call('ZSCORE', K_RETIRED, name)
      end
    end
  end
  out[#out + 1] = expiry or '0'
  out[#out + 1] = (closing == cid) and 1 or 0
end
return out
"""
)

# TIME run on the node that holds the keys: on a Cluster, the clock that times the leases.
_NOW = """
return redis.call('TIME')
"""

# Rooms. KEYS: 1 memberships (zset), 2 users (hash: user id -> memberships), 3 version,
# 4 occupied flag.
_ROOM_PRELUDE = (
    _COMMON
    + """
local KZ, KU, KV, KO = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function version() return tonumber(redis.call('GET', KV) or '0') end
-- Keep the group two leases past the last join or refresh; never shorten it, so that a
-- membership with a short lease does not take the others' longer ones with it. The
-- occupied flag (if set) is kept with a group that has members.
local function keep(ttl)
  local keys = {KZ, KU, KV}
  if redis.call('EXISTS', KU) == 1 then keys[4] = KO end
  for _, k in ipairs(keys) do
    if redis.call('PTTL', k) < ttl * 2 then redis.call('PEXPIRE', k, ttl * 2) end
  end
end
-- Remove membership m of uid: nil unless it was the user's last one, else
-- {count before, count after, new version}. An empty group leaves no key behind.
local function drop(uid, m)
  if redis.call('ZREM', KZ, m) == 0 then return nil end
  local before = redis.call('HLEN', KU)
  if redis.call('HINCRBY', KU, uid, -1) > 0 then return nil end
  redis.call('HDEL', KU, uid)
  local after = redis.call('HLEN', KU)
  local v = redis.call('INCR', KV)
  if after == 0 then redis.call('DEL', KZ, KU, KV) end
  return {before, after, v}
end
"""
)

_ROOM_JOIN = (
    _ROOM_PRELUDE
    + """
local uid, mid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local before = redis.call('HLEN', KU)
local changed, v = 0, 0
if redis.call('ZADD', KZ, now_ms() + ttl, member(uid, mid)) == 1 then
  if redis.call('HINCRBY', KU, uid, 1) == 1 then changed = 1 end
end
if changed == 1 then v = redis.call('INCR', KV) else v = version() end
keep(ttl)
return {changed, before, redis.call('HLEN', KU), v}
"""
)

_ROOM_LEAVE = (
    _ROOM_PRELUDE
    + """
local uid, mid = ARGV[1], ARGV[2]
local r = drop(uid, member(uid, mid))
if r then return {1, r[1], r[2], r[3]} end
local n = redis.call('HLEN', KU)
return {0, n, n, version()}
"""
)

_ROOM_MEMBERS = (
    _ROOM_PRELUDE
    + """
return {redis.call('HKEYS', KU), version()}
"""
)

_ROOM_COUNT = (
    _ROOM_PRELUDE
    + """
return {redis.call('HLEN', KU), version()}
"""
)

# ARGV: ttl, then user id, member id pairs. XX: a membership that expired and was swept,
# or was left, is not created again.
_ROOM_REFRESH = (
    _ROOM_PRELUDE
    + """
local ttl = tonumber(ARGV[1])
local expiry = now_ms() + ttl
for i = 2, #ARGV, 2 do redis.call('ZADD', KZ, 'XX', expiry, member(ARGV[i], ARGV[i + 1])) end
keep(ttl)
return 0
"""
)

# {uid, count before, count after, version, ...} for each user-level leave.
_ROOM_SWEEP = (
    _ROOM_PRELUDE
    + """
local expired = redis.call('ZRANGEBYSCORE', KZ, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, m in ipairs(expired) do
  local uid = split(m)
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

# The occupied flag: set if not set while the group has members (with the group's expiry);
# taken when the group has none. 1 when this call set or took it.
_ROOM_OCCUPIED = (
    _ROOM_PRELUDE
    + """
if redis.call('EXISTS', KO) == 1 then return 0 end
local ttl = redis.call('PTTL', KU)
if ttl == -2 then return 0 end
if ttl > 0 then redis.call('SET', KO, '1', 'PX', ttl) else redis.call('SET', KO, '1') end
return 1
"""
)

_ROOM_SETTLE = (
    _ROOM_PRELUDE
    + """
if redis.call('EXISTS', KU) == 1 then return 0 end
return redis.call('DEL', KO)
"""
)

# Streams. The history is a list of ``<offset>:<publish ms>:<payload>``, appended by RPUSH
# and trimmed from the head by LTRIM, so it always holds consecutive offsets ending at the
# meta's latest: the entries after offset N are its last ``latest - N`` items (LRANGE with
# negative indexes, O(entries read)). Measured on Redis 7.0 with 200-byte payloads, a list
# costs 384 B for one entry, 2.7 KB for 10, 229 KB for 1000; a Redis Stream (XADD with ids
# ``<offset>-1``) 4.7 KB for one entry (it preallocates a 4 KB listpack node per stream),
# 4.7 KB for 10, 259 KB for 1000; a sorted set 1.1 KB, 4.0 KB, 310 KB. Streams are mostly
# small (one per user or group, a few recent messages), so the list wins everywhere. Each
# entry still carries its offset, and readers check it rather than trust the positions.
_STREAM_COMMON = (
    _COMMON
    + """
-- Length-prefixed strings: #s counts bytes, so any stream name or user id round-trips.
local function field(s) return #s .. ':' .. s end
local function take(m, pos)
  local sep = string.find(m, ':', pos, true)
  local n = tonumber(string.sub(m, pos, sep - 1))
  return string.sub(m, sep + 1, sep + n), sep + n + 1
end
-- A user's cursor, "<delivered>:<acked>".
local function cursor(v)
  if not v then return 0, 0 end
  local sep = string.find(v, ':', 1, true)
  return tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
end
-- A history entry: offset, publish ms, payload.
local function entry(v)
  local a = string.find(v, ':', 1, true)
  local b = string.find(v, ':', a + 1, true)
  return tonumber(string.sub(v, 1, a - 1)), string.sub(v, a + 1, b - 1), string.sub(v, b + 1)
end
-- A new epoch for stream (KM, KL, KA): whatever history or cursors outlived the old
-- meta (a ``ttl`` above ``meta_ttl``, an eviction) belong to no epoch any more.
local function new_epoch(KM, KL, KA, e, meta_ttl)
  redis.call('DEL', KL, KA)
  redis.call('HSET', KM, 'e', e, 'o', 0)
  redis.call('PEXPIRE', KM, meta_ttl)
end
"""
)

# KEYS: meta, history, cursors, due. ARGV: payload, size, ttl ms, meta_ttl ms, new epoch,
# stream name, tracked user id, delay ms (-1: not tracked). Returns {epoch, offset}.
# A tracked publication's member in the due set: stream, user id and epoch length-prefixed,
# then ``<offset>:<publish ms>`` (the time survives the entry's trimming).
_STREAM_PUBLISH = (
    _STREAM_COMMON
    + """
local KM, KL, KA, KD = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local e = redis.call('HGET', KM, 'e')
if not e then
  e = ARGV[5]
  new_epoch(KM, KL, KA, e, ARGV[4])
end
local o = redis.call('HINCRBY', KM, 'o', 1)
redis.call('HSET', KM, 't', ARGV[3])
redis.call('RPUSH', KL, o .. ':' .. now .. ':' .. ARGV[1])
local size = tonumber(ARGV[2])
if size > 0 then
  redis.call('LTRIM', KL, -size, -1)
  redis.call('PEXPIRE', KL, ARGV[3])
else
  redis.call('DEL', KL)
end
redis.call('PEXPIRE', KM, ARGV[4])
redis.call('PEXPIRE', KA, ARGV[4])
local delay = tonumber(ARGV[8])
if delay >= 0 then
  local m = field(ARGV[6]) .. field(ARGV[7]) .. field(e) .. o .. ':' .. now
  redis.call('ZADD', KD, now + delay, m)
end
return {e, o}
"""
)

# KEYS: (meta, history, cursors) per stream. ARGV: new epoch, meta_ttl ms, ttl ms, size,
# then (since, epoch) per stream, since '' for None. Per stream: {epoch, offset,
# recovered, {offset, payload, time ms, ...}}.
_STREAM_READ = (
    _STREAM_COMMON
    + """
local now = now_ms()
local fresh, meta_ttl, ttl, size = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 1, #KEYS / 3 do
  local KM, KL, KA = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local since, epoch = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local meta = redis.call('HMGET', KM, 'e', 'o')
  local e, o = meta[1], tonumber(meta[2])
  if not e then
    e, o = fresh, 0
    new_epoch(KM, KL, KA, e, meta_ttl)
  end
  local recovered, flat = 1, {}
  if since ~= '' then
    since = tonumber(since)
    if epoch ~= e or since > o or since < 0 then
      recovered = 0
    elseif since < o then
      -- Entries older than ttl are still stored while later publications keep the key
      -- alive: skipped here (trimming them by age on publish would cost a scan).
      local n = math.min(o - since, size)
      if n > 0 then
        for _, v in ipairs(redis.call('LRANGE', KL, -n, -1)) do
          local off, t, payload = entry(v)
          if off > since and tonumber(t) > now - ttl then
            flat[#flat + 1] = off
            flat[#flat + 1] = payload
            flat[#flat + 1] = t
          end
        end
      end
      if flat[1] ~= since + 1 then recovered = 0 end
    end
  end
  out[i] = {e, o, recovered, flat}
end
return out
"""
)

# KEYS: meta per stream. {epoch or nil, offset or nil, ...}.
_STREAM_POSITIONS = """
local out = {}
for i = 1, #KEYS do
  local meta = redis.call('HMGET', KEYS[i], 'e', 'o')
  out[2 * i - 1] = meta[1]
  out[2 * i] = meta[2]
end
return out
"""

# KEYS: (meta, cursors) per update. ARGV: (user id, epoch, delivered, acked) per update.
# The cursors hash lives as long as the meta (same PTTL).
_STREAM_ACK = (
    _STREAM_COMMON
    + """
for i = 1, #KEYS / 2 do
  local KM, KA = KEYS[2 * i - 1], KEYS[2 * i]
  local uid, epoch = ARGV[4 * i - 3], ARGV[4 * i - 2]
  local meta = redis.call('HMGET', KM, 'e', 'o')
  if meta[1] == epoch then
    local o = tonumber(meta[2])
    local d0, a0 = cursor(redis.call('HGET', KA, uid))
    local a = math.min(math.max(a0, tonumber(ARGV[4 * i])), o)
    local d = math.min(math.max(d0, tonumber(ARGV[4 * i - 1]), a), o)
    if a ~= a0 or d ~= d0 then
      redis.call('HSET', KA, uid, string.format('%d:%d', d, a))
      local keep = redis.call('PTTL', KM)
      if keep > 0 then redis.call('PEXPIRE', KA, keep) end
    end
  end
end
return 0
"""
)

# KEYS: meta, cursors. ARGV: user id. nil, or {epoch, offset, cursor or nil}.
_STREAM_CURSOR = """
local meta = redis.call('HMGET', KEYS[1], 'e', 'o')
if not meta[1] then return nil end
return {meta[1], meta[2], redis.call('HGET', KEYS[2], ARGV[1])}
"""

# KEYS: due. ARGV: stream key prefix, limit. Takes (ZRANGEBYSCORE + ZREM, atomically) the
# publications whose deadline passed, drops those acked in their epoch, and returns
# {stream, user id, epoch, offset, payload or nil, publish ms, ...}, oldest deadline first.
# Dropped ones do not count towards the limit (at most 10 x limit examined per call).
_STREAM_DUE = (
    _STREAM_COMMON
    + """
local KD, SP, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out, n, examined = {}, 0, 0
while n < limit and examined < limit * 10 do
  local batch = redis.call('ZRANGEBYSCORE', KD, '-inf', now, 'LIMIT', 0, limit - n)
  if #batch == 0 then break end
  examined = examined + #batch
  for _, m in ipairs(batch) do
    redis.call('ZREM', KD, m)
    local s, pos = take(m, 1)
    local uid, epoch
    uid, pos = take(m, pos)
    epoch, pos = take(m, pos)
    local rest = string.sub(m, pos)
    local sep = string.find(rest, ':', 1, true)
    local off, t = tonumber(string.sub(rest, 1, sep - 1)), string.sub(rest, sep + 1)
    local base = SP .. s
    local keep, payload = true, false
    local meta = redis.call('HMGET', base .. ':m', 'e', 'o', 't')
    if meta[1] == epoch then
      local _, acked = cursor(redis.call('HGET', base .. ':a', uid))
      if acked >= off then
        keep = false
      else
        local v = redis.call('LINDEX', base .. ':l', off - tonumber(meta[2]) - 1)
        if v then
          -- Older than the history's ttl: gone for readers, so gone here too.
          local found, at, p = entry(v)
          if found == off and tonumber(at) > now - tonumber(meta[3] or 0) then payload = p end
        end
      end
    end
    if keep then
      for _, v in ipairs({s, uid, epoch, off}) do out[#out + 1] = v end
      out[#out + 1] = payload
      out[#out + 1] = t
      n = n + 1
    end
  end
end
return out
"""
)

# Sizes above which a list of ids is split into several commands, to stay far below
# Lua's unpack() limit and Redis's argument limits.
_CHUNK = 5000
# Pairs per heartbeat script, so that a call holds Redis well under 10 ms: storing 500
# lost pairs again took 16-23 ms of Redis (SLOWLOG, private redis-server 7.0.15, a loaded
# machine), 200 took 4.5-10.9 ms (9.5-9.7 ms in benchmarks/scale.py's "lost lease"
# step); filing 200 held ones again 0.7-2.5 ms. The calls are pipelined: one round trip.
_HEARTBEAT_CHUNK = 100
# Streams per script call in the stream methods (each call pipelined, one round trip).
_STREAM_CHUNK = 1000


class RedisBackend(BasePresenceBackend):
    """Presence in Redis, shared by every server process that uses the same Redis.

    Options (``DJANGO_PRESENCE["BACKEND_OPTIONS"]``), all optional:

    - ``url``: defaults to ``DJANGO_PRESENCE["REDIS_URL"]``.
    - ``key_prefix``: defaults to ``DJANGO_PRESENCE["KEY_PREFIX"]``.
    - ``socket_timeout`` (5 s) and ``socket_connect_timeout`` (5 s): no call ever blocks on
      the server, so these bound every operation.
    - ``max_connections`` (100) and ``pool_timeout`` (10 s): a burst of connects waits for
      a pooled connection instead of failing (redis-py 8's default pool raises).
    - ``client_factory``: a callable ``(url, **options) -> redis.asyncio.Redis`` for
      Sentinel or Cluster clients.
    - ``transition_retention`` (3600 s): how long a user's last transition ``seq`` is kept
      after they went offline, so that a presence snapshot still orders it against
      messages in flight; then the sweep forgets it, and Redis holds nothing of users who
      are offline. Keep it far above the channel layer's message ``expiry`` (60 s).
    - ``sync_client_factory``: the same for the blocking ``redis.Redis`` client that sync
      callers read with. Without it, a project that sets ``client_factory`` reads from
      sync code through ``async_to_sync`` instead (slower, but on its own client).

    The async client is cached per running event loop, and closed when that loop closes,
    so sync callers going through ``async_to_sync`` do not leak connections. Reads from
    sync code (``is_user_online()`` in a view, the admin) use one blocking client shared
    by the process's threads, so they need no event loop and no new connection.
    """

    shared_across_processes = True

    def __init__(
        self,
        *,
        url: str | None = None,
        key_prefix: str | None = None,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 5.0,
        max_connections: int = 100,
        pool_timeout: float = 10.0,
        client_factory: Callable[..., Any] | None = None,
        sync_client_factory: Callable[..., Any] | None = None,
        transition_retention: float = 3600.0,
    ) -> None:
        super().__init__()
        from ..conf import presence_settings

        self.url: str = url or presence_settings.REDIS_URL
        prefix = key_prefix if key_prefix is not None else presence_settings.KEY_PREFIX
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}"):
            raise ValueError(
                "DJANGO_PRESENCE['KEY_PREFIX'] must be a non-empty string without braces, "
                f"got {prefix!r}."
            )
        self.key_prefix = prefix
        tag = "{" + prefix + "}"
        self._keys = [
            f"{tag}:leases",
            f"{tag}:online",
            f"{tag}:seq",
            f"{tag}:tseq",
            f"{tag}:closing",
            f"{tag}:sweeplock",
            f"{tag}:offline",
            f"{tag}:adue",
            f"{tag}:procs",
            f"{tag}:pconf",
            f"{tag}:retired",
        ]
        self._user_prefix = f"{tag}:u:"
        self._room_prefix = f"{tag}:room:"
        self._stream_prefix = f"{tag}:s:"
        self._due_key = f"{tag}:due"
        self._retention_ms = _ms(check_retention(transition_retention))
        self._client_options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "max_connections": max_connections,
            "pool_timeout": pool_timeout,
        }
        self._client_factory = client_factory
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._scripts: dict[str, str] = {}
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ScriptQueue] = (
            weakref.WeakKeyDictionary()
        )
        self._sync_client_factory = sync_client_factory
        # A project that builds its own async client (Sentinel, Cluster) and no blocking
        # one reads from sync code through async_to_sync, on its own client.
        self._sync_reads = sync_client_factory is not None or client_factory is None
        self._sync_client: Any = None
        self._sync_lock = threading.Lock()

    # -- connection handling ---------------------------------------------------------------

    def _make_client(self) -> Any:
        options = dict(self._client_options)
        if self._client_factory is not None:
            return self._client_factory(self.url, **options)
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=options.pop("max_connections"),
            timeout=options.pop("pool_timeout"),
            **options,
        )
        return aioredis.Redis(connection_pool=pool)

    def client(self) -> Any:
        """The ``redis.asyncio`` client of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._make_client()
            clients = self._clients
            # The client refers to its loop, so the weak key alone would never let go of
            # either: the entry is dropped when the loop closes.
            _close_with_loop(loop, client, lambda: clients.pop(loop, None))
        return client

    def sync_client(self) -> Any:
        """The blocking ``redis.Redis`` client for sync callers, shared by every thread.

        ``None`` when a ``client_factory`` is set without a ``sync_client_factory``. The
        pool is safe to share across threads and resets itself in a forked child.
        """
        if self._sync_client is None and self._sync_reads:
            with self._sync_lock:
                if self._sync_client is None:
                    self._sync_client = self._make_sync_client()
        return self._sync_client

    def _make_sync_client(self) -> Any:
        options = dict(self._client_options)
        if self._sync_client_factory is not None:
            return self._sync_client_factory(self.url, **options)
        pool = syncredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=options.pop("max_connections"),
            timeout=options.pop("pool_timeout"),
            **options,
        )
        return syncredis.Redis(connection_pool=pool)

    async def aclose(self) -> None:
        """Close the running loop's client, if any."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await _aclose(client)

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e

    def _call_sync(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e

    def _unavailable(self, error: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"Redis at {_safe_url(self.url)} is unavailable: {error}")

    async def _eval(
        self, name: str, source: str, args: Sequence[Any], keys: Sequence[str] | None = None
    ) -> Any:
        """Run script ``name`` on ``keys`` (the presence keys by default)."""
        client = self.client()
        script_keys = self._keys if keys is None else keys

        async def run() -> Any:
            sha = self._scripts.get(name)
            if sha is not None:
                try:
                    return await client.evalsha(sha, len(script_keys), *script_keys, *args)
                except redis_exceptions.NoScriptError:
                    pass  # Redis restarted or was flushed: load the script again.
            self._scripts[name] = await client.script_load(source)
            return await client.evalsha(self._scripts[name], len(script_keys), *script_keys, *args)

        return await self._call(run)

    async def _eval_each(
        self, name: str, source: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)``, all in one pipelined round trip.

        Every call's keys are under the backend's hash tag, so the pipeline goes to one
        node even on a Cluster. Raises the first call's error, if any call failed.
        """
        if not calls:
            return []
        results = await self._eval_many([(name, source, keys, args) for keys, args in calls])
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _eval_queued(self, name: str, source: str, args: Sequence[Any]) -> Any:
        """Run script ``name`` with the calls queued meanwhile, in one pipelined round trip.

        The connect and disconnect scripts go this way: under load, the connections a
        process opens or closes while one round trip is under way share the next one
        (redis-py's cost per call is most of a connect's Redis cost, and a pipelined call
        costs less than half of it). With nothing else queued, the call is sent on the
        event loop's next turn. Calls run in the order they were made.
        """
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _ScriptQueue(self._eval_many)
        return await queue.submit((name, source, self._keys, args))

    async def _eval_many(self, calls: Sequence[_ScriptCall]) -> list[Any]:
        """Run each ``(name, source, keys, args)``, pipelined in one round trip.

        Returns each call's result, or the exception it raised. A call refused because
        Redis no longer has its script (restarted, flushed) is sent again once loaded;
        the others are not (they ran).
        """
        client = self.client()

        async def load(batch: Sequence[_ScriptCall]) -> None:
            for name, source in {call[0]: call[1] for call in batch}.items():
                self._scripts[name] = await client.script_load(source)

        async def execute(batch: Sequence[_ScriptCall]) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for name, _, keys, args in batch:
                    pipe.evalsha(self._scripts[name], len(keys), *keys, *args)
                return list(await pipe.execute(raise_on_error=False))

        async def run() -> list[Any]:
            await load([call for call in calls if call[0] not in self._scripts])
            results = await execute(calls)
            missing = [
                i for i, r in enumerate(results) if isinstance(r, redis_exceptions.NoScriptError)
            ]
            if missing:
                await load([calls[i] for i in missing])
                again = await execute([calls[i] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
            for i, result in enumerate(results):
                if isinstance(result, _UNAVAILABLE):  # a read-only replica answers each call
                    error = self._unavailable(result)
                    error.__cause__ = result
                    results[i] = error
            return results

        return await self._call(run)

    # -- contract --------------------------------------------------------------------------

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
        args = [self._user_prefix, user_id, _pack_cid(connection_id), _ms(ttl), server]
        args += [limit or 0, _encode_data(data), _ms(idle)]
        return _change(user_id, _unpacked(await self._eval_queued("add", _ADD, args)))

    async def remove_connection(
        self, user_id: str, connection_id: str, *, grace: float = 0
    ) -> Change:
        result = await self._eval_queued(
            "remove", _REMOVE, [self._user_prefix, user_id, _pack_cid(connection_id), _ms(grace)]
        )
        return _change(user_id, _unpacked(result))

    async def heartbeat(
        self, connections: Sequence[tuple[str, str]], *, ttl: float, server: str = ""
    ) -> list[tuple[str, Change]]:
        # Scripts of _HEARTBEAT_CHUNK pairs, pipelined: one round trip, and no script
        # long enough to hold Redis up (storing a pair again runs ~20 commands).
        calls = [
            (
                self._keys,
                [
                    self._user_prefix,
                    _ms(ttl),
                    server,
                    *_pair_args(connections[start : start + _HEARTBEAT_CHUNK]),
                ],
            )
            for start in range(0, len(connections), _HEARTBEAT_CHUNK)
        ]
        restored: list[tuple[str, Change]] = []
        for result in await self._eval_each("heartbeat", _HEARTBEAT, calls):
            restored += _restored(result)
        return restored

    async def sweep(self, *, limit: int = 1000, lock_ttl: float = 0) -> SweepResult:
        token = uuid.uuid4().hex
        result = await self._eval(
            "sweep", _SWEEP, [self._user_prefix, limit, _ms(lock_ttl), token, self._retention_ms]
        )
        return _sweep_result(result)

    async def heartbeat_and_sweep(
        self,
        connections: Sequence[tuple[str, str]],
        *,
        ttl: float,
        server: str = "",
        limit: int = 1000,
        lock_ttl: float = 0,
    ) -> tuple[list[tuple[str, Change]], SweepResult]:
        """One script, hence one round trip, for up to 5000 connections (see the base)."""
        last = max(0, len(connections) - _CHUNK)
        restored = await self.heartbeat(connections[:last], ttl=ttl, server=server)
        args = [self._user_prefix, _ms(ttl), server, limit, _ms(lock_ttl), uuid.uuid4().hex]
        args.append(self._retention_ms)
        args += _pair_args(connections[last:])
        beat, swept = await self._eval("heartbeat_and_sweep", _HEARTBEAT_AND_SWEEP, args)
        return restored + _restored(beat), _sweep_result(swept)

    async def renew_server(self, server: str, *, ttl: float, rotate: bool = False) -> bool:
        args = [self._user_prefix, server, _ms(ttl), int(rotate)]
        return bool(int(await self._eval("renew", _RENEW, args)))

    async def renew_server_and_sweep(
        self,
        server: str,
        *,
        ttl: float,
        rotate: bool = False,
        limit: int = 1000,
        lock_ttl: float = 0,
    ) -> tuple[bool, SweepResult]:
        """One script, hence one round trip, whatever the server holds (see the base)."""
        args = [self._user_prefix, server, _ms(ttl), int(rotate), limit, _ms(lock_ttl)]
        args += [uuid.uuid4().hex, self._retention_ms]
        held, swept = await self._eval("renew_and_sweep", _RENEW_AND_SWEEP, args)
        return bool(int(held)), _sweep_result(swept)

    async def remove_user(self, user_id: str) -> tuple[int, Change]:
        result = await self._eval("remove_user", _REMOVE_USER, [self._user_prefix, user_id])
        return int(result[0]), _change(user_id, [result[1], 0, *result[2:]])

    async def set_connection_data(
        self, user_id: str, connection_id: str, data: ConnectionData
    ) -> Change:
        args = [self._user_prefix, user_id, _pack_cid(connection_id), _encode_data(data)]
        return _change(user_id, await self._eval("set_data", _SET_DATA, args))

    async def touch(self, activity: Sequence[tuple[str, float]], *, idle: float) -> list[Change]:
        changes: list[Change] = []
        for start in range(0, len(activity), _CHUNK):
            args: list[Any] = [self._user_prefix, _ms(idle)]
            for user_id, ago in activity[start : start + _CHUNK]:
                args += [user_id, _ms(ago)]
            result = await self._eval("touch", _TOUCH, args)
            changes += _changes(result)
        return changes

    async def set_status(
        self, user_id: str, status: str, *, text: str = "", ttl: float | None = None
    ) -> Change:
        args = [self._user_prefix, user_id, status, text, -1 if ttl is None else _ms(ttl)]
        return _change(user_id, await self._eval("set_status", _SET_STATUS, args))

    async def availability(self, user_ids: Iterable[str]) -> dict[str, Availability]:
        ids = list(dict.fromkeys(user_ids))
        found: dict[str, Availability] = {}
        for start in range(0, len(ids), _STREAM_CHUNK):
            chunk = ids[start : start + _STREAM_CHUNK]
            rows = await self._eval("availability", _AVAILABILITY, [self._user_prefix, *chunk])
            for uid, row in zip(chunk, rows, strict=True):
                online, seq, public, state, status, text, until, active, data = row
                found[uid] = Availability(
                    uid,
                    bool(int(online)),
                    int(seq),
                    _presence(public),
                    _str(state),
                    _str(status) or "available",
                    _str(text),
                    int(until) / 1000 if until else None,
                    int(active) / 1000 if active else None,
                    {
                        _unpack_cid(data[i]): _decode_data(data[i + 1])
                        for i in range(0, len(data), 2)
                    },
                )
        return found

    async def is_online(self, user_id: str) -> bool:
        client = self.client()
        return bool(await self._call(lambda: client.hexists(self._keys[1], user_id)))

    async def connection_count(self, user_id: str) -> int:
        client = self.client()

        async def run() -> int:
            async with client.pipeline(transaction=True) as pipe:
                return _open_count(await self._count_commands(pipe, user_id).execute())

        return await self._call(run)

    async def online_user_ids(self, user_ids: Iterable[str]) -> set[str]:
        ids = list(user_ids)
        if not ids:
            return set()
        client = self.client()

        async def run() -> set[str]:
            if len(ids) <= _CHUNK:
                return _online(ids, [await client.hmget(self._keys[1], ids)])
            async with client.pipeline(transaction=False) as pipe:
                return _online(ids, await self._online_commands(pipe, ids).execute())

        return await self._call(run)

    def _count_commands(self, pipe: Any, user_id: str) -> Any:
        pipe.hlen(self._user_prefix + user_id)
        pipe.hget(self._keys[4], user_id)
        return pipe

    def _online_commands(self, pipe: Any, ids: Sequence[str]) -> Any:
        for start in range(0, len(ids), _CHUNK):
            pipe.hmget(self._keys[1], ids[start : start + _CHUNK])
        return pipe

    # -- blocking reads (one shared client; no event loop) -----------------------------------

    def is_online_sync(self, user_id: str) -> bool:
        client = self.sync_client()
        if client is None:
            return super().is_online_sync(user_id)
        return bool(self._call_sync(lambda: client.hexists(self._keys[1], user_id)))

    def connection_count_sync(self, user_id: str) -> int:
        client = self.sync_client()
        if client is None:
            return super().connection_count_sync(user_id)

        def run() -> int:
            with client.pipeline(transaction=True) as pipe:
                return _open_count(self._count_commands(pipe, user_id).execute())

        return self._call_sync(run)

    def online_user_ids_sync(self, user_ids: Iterable[str]) -> set[str]:
        ids = list(user_ids)
        client = self.sync_client()
        if client is None:
            return super().online_user_ids_sync(ids)
        if not ids:
            return set()

        def run() -> set[str]:
            if len(ids) <= _CHUNK:
                return _online(ids, [client.hmget(self._keys[1], ids)])
            with client.pipeline(transaction=False) as pipe:
                return _online(ids, self._online_commands(pipe, ids).execute())

        return self._call_sync(run)

    def all_online_user_ids_sync(self) -> set[str]:
        client = self.sync_client()
        if client is None:
            return super().all_online_user_ids_sync()
        return {_str(k) for k in self._call_sync(lambda: client.hkeys(self._keys[1]))}

    async def presence_snapshot(self, user_ids: Iterable[str]) -> dict[str, tuple[bool, int]]:
        ids = list(user_ids)
        snapshot: dict[str, tuple[bool, int]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            online, seqs = await self._eval("snapshot", _SNAPSHOT, [self._user_prefix, *chunk])
            for uid, on, seq in zip(chunk, online, seqs, strict=True):
                # The larger: an online user's seq is in ``online`` (in ``tseq`` when
                # a process of an earlier version made the transition).
                snapshot[uid] = (on is not None, max(int(on or 0), int(seq or 0)))
        return snapshot

    async def all_online_user_ids(self) -> set[str]:
        client = self.client()
        keys = await self._call(lambda: client.hkeys(self._keys[1]))
        return {_str(k) for k in keys}

    async def user_connections(self, user_id: str) -> list[ConnectionInfo]:
        result = await self._eval(
            "user_connections", _USER_CONNECTIONS, [self._user_prefix, user_id]
        )
        infos = []
        for i in range(0, len(result), 4):
            opened, _, server = _str(result[i + 1]).partition("|")
            infos.append(
                ConnectionInfo(
                    user_id=user_id,
                    connection_id=_unpack_cid(result[i]),
                    opened_at=int(opened) / 1000,
                    expires_at=float(result[i + 2]) / 1000,
                    closing=bool(int(result[i + 3])),
                    server=server,
                )
            )
        return infos

    async def now(self) -> float:
        # A script on the presence keys, so that on a Cluster the clock read is that of
        # the node whose TIME timed the leases.
        seconds, microseconds = await self._eval("now", _NOW, [], keys=self._keys[:1])
        return int(seconds) + int(microseconds) / 1e6

    # -- rooms -------------------------------------------------------------------------------

    def _room_keys(self, group: str) -> list[str]:
        # Every suffix is one character, so no two groups' keys can coincide.
        base = self._room_prefix + group
        return [f"{base}:c", f"{base}:u", f"{base}:v", f"{base}:o"]

    async def room_join(
        self, group: str, user_id: str, member_id: str, *, ttl: float
    ) -> MemberChange:
        result = await self._eval(
            "room_join", _ROOM_JOIN, [user_id, member_id, _lease_ms(ttl)], self._room_keys(group)
        )
        return _member_change(group, user_id, True, result)

    async def room_leave(self, group: str, user_id: str, member_id: str) -> MemberChange:
        result = await self._eval(
            "room_leave", _ROOM_LEAVE, [user_id, member_id], self._room_keys(group)
        )
        return _member_change(group, user_id, False, result)

    async def room_members(self, group: str) -> tuple[list[str], int]:
        user_ids, version = await self._eval(
            "room_members", _ROOM_MEMBERS, [], self._room_keys(group)
        )
        return [_str(uid) for uid in user_ids], int(version)

    async def room_count(self, group: str) -> tuple[int, int]:
        count, version = await self._eval("room_count", _ROOM_COUNT, [], self._room_keys(group))
        return int(count), int(version)

    async def room_refresh(
        self, memberships: Sequence[tuple[str, str, str]], *, ttl: float
    ) -> None:
        by_group: dict[str, list[str]] = {}
        for group, user_id, member_id in memberships:
            by_group.setdefault(group, []).extend((user_id, member_id))
        calls = [
            (self._room_keys(group), [_lease_ms(ttl), *pairs[start : start + 2 * _CHUNK]])
            for group, pairs in by_group.items()
            for start in range(0, len(pairs), 2 * _CHUNK)
        ]
        await self._eval_each("room_refresh", _ROOM_REFRESH, calls)

    async def room_sweep(self, groups: Iterable[str], *, limit: int = 1000) -> list[MemberChange]:
        names = list(dict.fromkeys(groups))
        results = await self._eval_each(
            "room_sweep", _ROOM_SWEEP, [(self._room_keys(group), [limit]) for group in names]
        )
        return [
            MemberChange(
                group,
                _str(result[i]),
                False,
                True,
                int(result[i + 1]),
                int(result[i + 2]),
                int(result[i + 3]),
            )
            for group, result in zip(names, results, strict=True)
            for i in range(0, len(result), 4)
        ]

    async def room_occupied(self, group: str) -> bool:
        result = await self._eval("room_occupied", _ROOM_OCCUPIED, [], self._room_keys(group))
        return bool(int(result))

    async def room_settle(self, group: str) -> bool:
        result = await self._eval("room_settle", _ROOM_SETTLE, [], self._room_keys(group))
        return bool(int(result))

    # -- streams -----------------------------------------------------------------------------

    def _stream_keys(self, stream: str) -> list[str]:
        # Every suffix is one character, so no two streams' keys can coincide.
        base = self._stream_prefix + stream
        return [f"{base}:m", f"{base}:l", f"{base}:a"]

    async def stream_publish(
        self,
        stream: str,
        payload: str,
        *,
        limits: StreamLimits,
        track: tuple[str, float] | None = None,
    ) -> StreamPosition:
        user_id, delay = track if track is not None else ("", 0)
        args = [
            payload,
            max(0, limits.size),
            _lease_ms(limits.ttl),
            _lease_ms(limits.meta_ttl),
            secrets.token_hex(4),
            stream,
            user_id,
            -1 if track is None else _ms(delay),  # a negative delay: due at once
        ]
        epoch, offset = await self._eval(
            "stream_publish", _STREAM_PUBLISH, args, [*self._stream_keys(stream), self._due_key]
        )
        return StreamPosition(_str(epoch), int(offset))

    async def stream_read(
        self,
        requests: Sequence[tuple[str, int | None, str | None]],
        *,
        limits: StreamLimits,
    ) -> list[StreamRead]:
        head = [
            secrets.token_hex(4),
            _lease_ms(limits.meta_ttl),
            _lease_ms(limits.ttl),
            max(0, limits.size),
        ]
        calls = []
        for start in range(0, len(requests), _STREAM_CHUNK):
            chunk = requests[start : start + _STREAM_CHUNK]
            keys = [key for name, _, _ in chunk for key in self._stream_keys(name)]
            args = list(head)
            for _, since, epoch in chunk:
                args += ["" if since is None else int(since), epoch or ""]
            calls.append((keys, args))
        results = await self._eval_each("stream_read", _STREAM_READ, calls)
        reads = []
        for (name, _, _), (epoch, offset, recovered, flat) in zip(
            requests, (r for result in results for r in result), strict=True
        ):
            entries = tuple(
                StreamEntry(int(flat[i]), _str(flat[i + 1]), int(flat[i + 2]) / 1000)
                for i in range(0, len(flat), 3)
            )
            reads.append(StreamRead(name, _str(epoch), int(offset), entries, bool(recovered)))
        return reads

    async def stream_positions(self, streams: Iterable[str]) -> dict[str, StreamPosition | None]:
        names = list(dict.fromkeys(streams))
        calls: list[tuple[list[str], list[Any]]] = [
            ([self._stream_keys(name)[0] for name in names[start : start + _STREAM_CHUNK]], [])
            for start in range(0, len(names), _STREAM_CHUNK)
        ]
        results = await self._eval_each("stream_positions", _STREAM_POSITIONS, calls)
        flat = [value for result in results for value in result]
        return {
            name: None if epoch is None else StreamPosition(_str(epoch), int(offset))
            for name, epoch, offset in zip(names, flat[::2], flat[1::2], strict=True)
        }

    async def stream_ack(
        self, updates: Sequence[tuple[str, str, str, int, int]], *, limits: StreamLimits
    ) -> None:
        calls = []
        for start in range(0, len(updates), _STREAM_CHUNK):
            chunk = updates[start : start + _STREAM_CHUNK]
            keys: list[str] = []
            args: list[Any] = []
            for name, user_id, epoch, delivered, acked in chunk:
                meta, _, cursors = self._stream_keys(name)
                keys += [meta, cursors]
                args += [user_id, epoch, int(delivered), int(acked)]
            calls.append((keys, args))
        await self._eval_each("stream_ack", _STREAM_ACK, calls)

    async def stream_cursor(self, stream: str, user_id: str) -> StreamCursor | None:
        meta, _, cursors = self._stream_keys(stream)
        result = await self._eval("stream_cursor", _STREAM_CURSOR, [user_id], [meta, cursors])
        if result is None:
            return None
        epoch, offset, cursor = result
        delivered, acked = _str(cursor).split(":") if cursor is not None else (0, 0)
        return StreamCursor(_str(epoch), int(offset), int(delivered), int(acked))

    async def stream_due(self, *, limit: int = 1000) -> list[Undelivered]:
        result = await self._eval(
            "stream_due", _STREAM_DUE, [self._stream_prefix, limit], [self._due_key]
        )
        return [
            Undelivered(
                _str(result[i]),
                _str(result[i + 1]),
                _str(result[i + 2]),
                int(result[i + 3]),
                None if result[i + 4] is None else _str(result[i + 4]),
                int(result[i + 5]) / 1000,
            )
            for i in range(0, len(result), 6)
        ]

    async def clear(self) -> None:
        client = self.client()

        async def run() -> None:
            tag = "{" + self.key_prefix + "}"
            keys = [k async for k in client.scan_iter(match=_glob_escape(tag) + ":*")]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])

        await self._call(run)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _lease_ms(seconds: float) -> int:
    # At least 1: the room keys are kept for two leases, and PEXPIRE 0 would delete them.
    return max(1, _ms(seconds))


def _member_change(group: str, user_id: str, joined: bool, result: Sequence[Any]) -> MemberChange:
    changed, before, count, version = result
    return MemberChange(
        group, user_id, joined, bool(int(changed)), int(before), int(count), int(version)
    )


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# channels_redis's channel names, the connection ids of consumers: 74 bytes.
_CHANNEL_NAME = re.compile(r"specific\.([0-9a-f]{32})!([0-9a-f]{32})\Z")
_PACKED = "~"


def _pack_cid(cid: str) -> str:
    """A connection id as the scripts store it (see :func:`_unpack_cid`).

    A channels_redis channel name, ``specific.<32 hex>!<32 hex>`` (74 bytes), is stored
    as ``~`` and its 32 bytes in unpadded base64url (44 bytes): a user's hash then stays
    a compact listpack, whose values Redis keeps only up to 64 bytes
    (``hash-max-listpack-value``); with 74-byte fields it is a hashtable of about twice the
    memory. Any other id is stored as it is, with one more ``~`` in front when it starts
    with one.
    """
    name = _CHANNEL_NAME.match(cid)
    if name is not None:
        packed = base64.urlsafe_b64encode(bytes.fromhex(name[1] + name[2]))
        return _PACKED + packed.decode().rstrip("=")
    return _PACKED + cid if cid.startswith(_PACKED) else cid


def _unpack_cid(value: Any) -> str:
    """The connection id that :func:`_pack_cid` stored as ``value``."""
    text = _str(value)
    if not text.startswith(_PACKED):
        return text
    rest = text[1:]
    if rest.startswith(_PACKED):
        return rest
    raw = base64.urlsafe_b64decode(rest + "=").hex()
    return f"specific.{raw[:32]}!{raw[32:]}"


def _change(user_id: str, result: Sequence[Any]) -> Change:
    """A Change from a script's ``{transition, count, seq, signature, hidden}``."""
    if int(result[0]) == _REFUSED:
        return Change(user_id, Transition.NONE, int(result[1]), refused=True)
    signature = _str(result[3])
    return Change(
        user_id,
        _TRANSITIONS[int(result[0])],
        int(result[1]),
        int(result[2]),
        presence=_presence(signature) if signature else None,
        hidden=bool(int(result[4])),
    )


def _unpacked(reply: Any) -> list[Any]:
    """The add and remove scripts' one string, ``"transition count seq hidden signature"``,
    as the list :func:`_change` reads (the signature last: it may hold spaces)."""
    transition, count, seq, hidden, signature = _str(reply).split(" ", 4)
    return [transition, count, seq, signature, hidden]


def _changes(result: Sequence[Any]) -> list[Change]:
    """Changes from ``uid, transition, seq, signature, hidden`` groups."""
    return [
        _change(_str(result[i]), [result[i + 1], 0, *result[i + 2 : i + 5]])
        for i in range(0, len(result), 5)
    ]


def _presence(signature: Any) -> PublicPresence:
    """The public presence a script's signature (see ``derive`` in the scripts) stands for."""
    state, devices, activities, text = _str(signature).split("\x1e")
    # Sorted here, by code point: Lua's table.sort follows the Redis server's locale.
    return PublicPresence(
        state,
        tuple(sorted(devices.split("\x1f"))) if devices else (),
        tuple(sorted(activities.split("\x1f"))) if activities else (),
        text,
    )


def _encode_data(data: ConnectionData | None) -> str:
    """A connection's data as the scripts store it ('' for None)."""
    if data is None:
        return ""
    device, activity = data.device, data.activity
    return (
        f"{int(data.keep_present)}{len(device.encode())}:{device}"
        f"{len(activity.encode())}:{activity}{data.data}"
    )


def _decode_data(value: Any) -> ConnectionData:
    """A connection's data as the scripts store it (see :func:`_encode_data`); '' none."""
    text = value if isinstance(value, bytes) else str(value).encode()
    if not text:
        return ConnectionData()
    keep = text[:1] == b"1"
    sep = text.index(b":", 1)
    end = sep + 1 + int(text[1:sep])
    device = text[sep + 1 : end]
    sep = text.index(b":", end)
    start = sep + 1 + int(text[end:sep])
    activity = text[sep + 1 : start]
    return ConnectionData(device.decode(), activity.decode(), text[start:].decode(), keep)


def _open_count(result: Sequence[Any]) -> int:
    total, closing = result
    return int(total) - (closing is not None)


def _online(ids: Sequence[str], chunks: Iterable[Sequence[Any]]) -> set[str]:
    values = [value for chunk in chunks for value in chunk]
    return {uid for uid, value in zip(ids, values, strict=True) if value is not None}


def _pair_args(connections: Sequence[tuple[str, str]]) -> list[Any]:
    return [value for user_id, cid in connections for value in (user_id, _pack_cid(cid))]


def _restored(result: Sequence[Any]) -> list[tuple[str, Change]]:
    return [
        (_unpack_cid(result[i + 1]), _change(_str(result[i]), result[i + 2 : i + 7]))
        for i in range(0, len(result), 7)
    ]


def _sweep_result(result: Sequence[Any]) -> SweepResult:
    if result[0] == -1:
        return SweepResult(swept=False)
    return SweepResult(int(result[0]), tuple(_changes(result[2:])), more=bool(int(result[1])))


def _glob_escape(value: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in value)


def _safe_url(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


async def _aclose(client: Any) -> None:
    """Close a client and its pool (``RedisCluster.aclose`` takes no argument)."""
    if isinstance(client, aioredis.Redis):
        await client.aclose(close_connection_pool=True)
    else:
        await client.aclose()


#: One script call: its name, its source, its keys and its arguments.
_ScriptCall = tuple[str, str, Sequence[str], Sequence[Any]]

#: Most script calls in one pipelined round trip of :class:`_ScriptQueue` (the connect
#: script runs ~20 commands: 100 of them hold Redis up a few milliseconds at most).
_QUEUE_BATCH = 100


class _ScriptQueue:
    """The script calls of one event loop, sent in pipelines with one round trip at a time.

    A call made while a round trip is under way waits for it and goes in the next one,
    with every other call made meanwhile (what databases call a group commit): a busy
    process makes far fewer, bigger round trips, an idle one loses nothing.
    """

    def __init__(
        self,
        send: Callable[[Sequence[_ScriptCall]], Awaitable[list[Any]]],
    ) -> None:
        self._send = send
        self._pending: list[tuple[_ScriptCall, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    def submit(self, call: _ScriptCall) -> asyncio.Future[Any]:
        """Queue one call; the future is its result (or the exception it raised)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_pending())
        return future

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:_QUEUE_BATCH]
                del self._pending[:_QUEUE_BATCH]
                try:
                    results = await self._send([call for call, _ in batch])
                except Exception as e:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise  # cancelled (the loop is closing): the rest fail with it
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # the caller was cancelled; the call ran anyway
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._sender = None
            for _, future in self._pending:  # only when cancelled: the loop is closing
                future.cancel()
            self._pending.clear()


def _close_with_loop(
    loop: asyncio.AbstractEventLoop, client: Any, forget: Callable[[], object]
) -> None:
    """Close ``client`` before ``loop`` closes (as channels_redis does for its pools).

    ``forget`` is called first, to drop the cached client of the closing loop.
    """
    original_close = loop.close

    def close(self: asyncio.AbstractEventLoop) -> None:
        self.close = original_close  # type: ignore[method-assign]
        forget()
        if not self.is_running():
            try:
                self.run_until_complete(_aclose(client))
            except Exception:  # the loop is being torn down; nothing left to protect
                logger.debug("Could not close the presence Redis client", exc_info=True)
        original_close()

    loop.close = types.MethodType(close, loop)  # type: ignore[method-assign]
