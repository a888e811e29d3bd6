"""The side effects of transitions: what happens once the backend decided one.

The backend decides every transition (a user came online or went offline; a user joined
or left a client group). This module applies what follows from it, in this order for a
presence transition:

1. the database copy: ``is_online`` (and ``last_seen`` when going offline) on the user
   model's fields or the package's table, as ``STORE`` says (:mod:`~django_presence.store`);
2. the :mod:`~django_presence.signals`, sent robustly (a receiver that raises is logged
   and the others still run);
3. ``presence.status`` to the user's watchers group, skipping groups nobody is in.

Steps 2 and 3 run different users' sends of a batch concurrently (a few at a time; the
signals only when all their receivers are async) and one user's in order, so a batch
waits for its slowest receiver, not for the sum of them.

A failure of one step is logged and does not stop the others: the backend's decision
stands. Batching and per-user ordering are the runtime's job
(:class:`~django_presence.runtime.Runtime`); this module applies one batch.

:func:`reconcile` repairs the database copy after it missed transitions (a process that
died between a transition and its write, a backend that lost its data), and announces
what it repairs exactly as the backend's own transitions are announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from . import groups, metrics, protocol, signals
from .backends import (
    OFFLINE,
    Availability,
    Change,
    MemberChange,
    PublicPresence,
    Transition,
    get_backend,
)
from .conf import number_setting, presence_settings
from .ids import SERVER_ID, key_order, pk_from_key, wire_user_id
from .store import DatabaseCopy, database_copy

T = TypeVar("T")

logger = logging.getLogger(__name__)

ONLINE = PublicPresence("online")

# Re-checks of the backend after a DB write, to undo a write that raced with a newer
# transition of the same user in another process (see _sync_db).
_MAX_DB_SYNC_ROUNDS = 5
# Signals and status_changed sends in flight at once per batch (each status_changed holds a
# pooled layer connection); see _in_user_order.
_CONCURRENT_SENDS = 8
# Primary keys per query in reconcile(), below every database's limit of parameters.
RECONCILE_BATCH = 500


def syncs_user_model() -> bool:
    """Whether transitions are written to the database (``STORE``, and the fields exist).

    The name is older than ``STORE = "table"``: True for either kind of copy.
    """
    return database_copy() is not None


async def apply(changes: Sequence[Change]) -> None:
    """Apply the side effects of ``changes`` (transitions and presence changes), in order.

    Transitions get the database write and ``user_online``/``user_offline``; every change
    of what others see (``Change.presence``) gets ``presence_changed`` and
    ``status_changed``. An invisible user's transition (``hidden``) gets the first two
    only.
    """
    if not changes:
        # A reconcile batch with nothing to repair: no thread hop, no database round trip.
        return
    now = timezone.now()
    transitions = [change for change in changes if change.changed]
    if transitions:
        await _apply_transitions(transitions, now)
    announced = [(change, presence) for change in changes if (presence := public(change))]
    await _in_user_order(
        announced,
        lambda item: item[0].user_id,
        _send_presence_signal,
        concurrent=signals.receiver_kind(signals.presence_changed, PublicPresence) == "async",
    )
    await _notify_watchers(announced, now)


async def _in_user_order(
    items: Sequence[T],
    user_of: Callable[[T], str],
    send: Callable[[T], Awaitable[None]],
    *,
    concurrent: bool = True,
) -> None:
    """Await ``send(item)`` for each item: different users' concurrently, a user's in order.

    Items of a batch go in waves, the n-th of each user in the n-th (almost always one
    wave), ``_CONCURRENT_SENDS`` at a time, so that a batch of transitions waits for its
    slowest receiver rather than for all of them one after the other. Not ``concurrent``:
    one after the other, in order. ``send`` must not raise (each logs its own failure).
    """
    if not concurrent:
        for item in items:
            await send(item)
        return
    waves: list[list[T]] = []
    depth: dict[str, int] = {}
    for item in items:
        user = user_of(item)
        n = depth[user] = depth.get(user, -1) + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(item)
    for wave in waves:
        for start in range(0, len(wave), _CONCURRENT_SENDS):
            chunk = wave[start : start + _CONCURRENT_SENDS]
            if len(chunk) == 1:
                await send(chunk[0])  # no task for the usual lone item
            else:
                # Each coroutine made when its chunk's turn comes, so that none is left
                # unawaited if the loop stops meanwhile.
                await asyncio.gather(*(send(item) for item in chunk))


def public(change: Change) -> PublicPresence | None:
    """What others are told of ``change``: its new public presence, or None (nothing).

    A transition that carries no presence (from a backend that derives none, or repaired
    by :func:`reconcile`) is told as plain ``online`` or ``offline``, unless hidden.
    """
    if change.presence is not None:
        return change.presence
    if change.changed and not change.hidden:
        return ONLINE if change.transition is Transition.ONLINE else OFFLINE
    return None


async def _apply_transitions(transitions: Sequence[Change], now: datetime) -> None:
    online = sum(1 for change in transitions if change.transition is Transition.ONLINE)
    metrics.increment("transitions", online, transition="online")
    metrics.increment("transitions", len(transitions) - online, transition="offline")
    if logger.isEnabledFor(logging.DEBUG):
        for change in transitions:
            logger.debug(
                "User %s %s",
                change.user_id,
                "came online" if change.transition is Transition.ONLINE else "went offline",
                extra={
                    "user_id": change.user_id,
                    "seq": change.seq,
                    "transition": change.transition.value,
                    "server": SERVER_ID,
                },
            )
    try:
        copy = database_copy()
        if copy is not None:
            await _sync_db(copy, transitions, now)
    except Exception:
        # Any database error (connection lost, lock timeout...) or a bad STORE: the
        # backend's decision stands and reconcile() repairs the copy; the signals still go
        # out.
        logger.exception("Could not write is_online for %d users", len(transitions))
    # Concurrently only when every receiver is async: sync ones share one thread anyway.
    kinds = {
        signals.receiver_kind(s, Transition) for s in (signals.user_online, signals.user_offline)
    }
    concurrent = "async" in kinds and "sync" not in kinds
    await _in_user_order(
        transitions, lambda change: change.user_id, _send_signal, concurrent=concurrent
    )


# -- the database copy ---------------------------------------------------------------------


async def _sync_db(copy: DatabaseCopy, transitions: Sequence[Change], now: datetime) -> None:
    """Write the transitions to the database copy, then make sure no newer one was lost.

    Two processes may write the same user's row in the opposite order of the
    transitions they observed. Each writer therefore reads the backend again after its
    write and corrects any row that no longer matches; the last writer always reads
    after the last transition, so the DB converges on the backend's state.
    """
    state = {change.user_id: change.transition is Transition.ONLINE for change in transitions}
    for _ in range(_MAX_DB_SYNC_ROUNDS):
        await database_sync_to_async(_write_online_state)(copy, state, now)
        actual = await get_backend().online_user_ids(state)
        state = {key: key in actual for key, online in state.items() if (key in actual) != online}
        if not state:
            return
    logger.warning(
        "is_online of users %s kept changing while being written",
        sorted(state),
        extra={"user_ids": sorted(state), "server": SERVER_ID},
    )


def _write_online_state(copy: DatabaseCopy, state: dict[str, bool], now: datetime) -> None:
    """Set ``is_online`` of the users in ``state``; ``last_seen`` of those going offline."""
    online = [pk_from_key(key) for key, value in state.items() if value]
    offline = [pk_from_key(key) for key, value in state.items() if not value]
    copy.write(online, offline, now)


async def last_seen(keys: Sequence[str]) -> dict[str, str | None]:
    """``last_seen`` (ISO 8601) of users from the database copy, by key: one query.

    Empty when no database copy is kept (``syncs_user_model()`` is False).
    """
    copy = database_copy() if keys else None
    if copy is None:
        return {}

    def read() -> dict[str, str | None]:
        seen = copy.last_seen_of([pk_from_key(key) for key in keys])
        return {str(pk): when.isoformat() if when else None for pk, when in seen.items()}

    return await database_sync_to_async(read)()


# -- signals ---------------------------------------------------------------------------------


async def _send_signal(change: Change) -> None:
    online = change.transition is Transition.ONLINE
    signal = signals.user_online if online else signals.user_offline
    name = "user_online" if online else "user_offline"
    extra = {"user_id": change.user_id, "server": SERVER_ID}
    # Robust: a receiver that raises does not keep the others from hearing of the
    # transition (plain send() stops at the first exception).
    try:
        await signals.send_robustly(
            signal,
            name,
            sender=Transition,
            log_extra=extra,
            user_id=pk_from_key(change.user_id),
            seq=change.seq,
        )
    except Exception:
        # Not a receiver's (send_robust catches those): the user id did not convert, or
        # the dispatch itself failed. The other transitions of the batch go on.
        logger.exception("Could not send %s for user %s", name, change.user_id, extra=extra)


async def _send_presence_signal(item: tuple[Change, PublicPresence]) -> None:
    change, presence = item
    extra = {"user_id": change.user_id, "server": SERVER_ID}
    try:
        await signals.send_robustly(
            signals.presence_changed,
            "presence_changed",
            sender=PublicPresence,
            log_extra=extra,
            user_id=pk_from_key(change.user_id),
            state=presence.state,
            devices=presence.devices,
            activities=presence.activities,
            status_text=presence.text,
            seq=change.seq,
        )
    except Exception:
        logger.exception(
            "Could not send presence_changed for user %s", change.user_id, extra=extra
        )


# -- status_changed --------------------------------------------------------------------------


async def _notify_watchers(
    announced: Sequence[tuple[Change, PublicPresence]], now: datetime
) -> None:
    layer = get_channel_layer(presence_settings.CHANNEL_LAYER)
    if layer is None or not announced:
        return
    keys = list(dict.fromkeys(change.user_id for change, _ in announced))
    names = {key: groups.watchers_group(pk_from_key(key)) for key in keys}
    watched = await groups_with_members(layer, list(names.values()))
    todo = [
        (names[change.user_id], change, presence)
        for change, presence in announced
        if watched is None or names[change.user_id] in watched
    ]
    await _in_user_order(
        todo,
        lambda item: item[1].user_id,
        lambda item: _send_status(layer, *item, now),
    )


def status_event(
    key: str, presence: PublicPresence, seq: int, last_seen: str | None
) -> dict[str, Any]:
    """The ``presence.status`` channel-layer event of a user's public presence."""
    return {
        "type": protocol.EVENT_STATUS,
        # JSON-safe (a UUID key would not survive msgpack).
        "user_id": wire_user_id(key),
        "is_online": presence.online,
        "last_seen": None if presence.online else last_seen,
        "seq": seq,
        "state": presence.state,
        "devices": list(presence.devices),
        "activities": list(presence.activities),
        "status_text": presence.text,
    }


async def _send_status(
    layer: Any, group: str, change: Change, presence: PublicPresence, now: datetime
) -> None:
    event = status_event(change.user_id, presence, change.seq, now.isoformat())
    try:
        try:
            await layer.group_send(group, event)
        except ConnectionError:
            # After a Redis restart the layer's first send fails on a pooled connection
            # that died with the old server; the retry gets a fresh one.
            await layer.group_send(group, event)
    except Exception:
        # The channel layer is at-most-once anyway: the runtime's resync makes good a
        # lost status_changed within two heartbeat intervals.
        logger.exception(
            "Could not notify the watchers of user %s",
            change.user_id,
            extra={"user_id": change.user_id, "server": SERVER_ID},
        )


async def groups_with_members(layer: Any, names: Sequence[str]) -> set[str] | None:
    """Which of the groups ``names`` have members, in one round trip per layer host.

    Only for channels_redis's ``RedisChannelLayer``, whose ``group_send`` costs two round
    trips even for an empty group; ``None`` (send to all) for any other layer or when the
    count fails. A group whose members all expired counts as having members: sending to
    it is what cleans it up. The group's key is built from the layer's public ``prefix``
    the way channels_redis 4 builds it (a test checks it against a real layer).
    """
    try:
        from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]
    except ImportError:  # the redis extra is not installed: no such layer can exist
        return None
    if not names or not isinstance(layer, RedisChannelLayer):
        return None
    try:
        by_host: dict[int, list[str]] = {}
        for name in names:
            by_host.setdefault(layer.consistent_hash(name), []).append(name)
        found: set[str] = set()
        for index, host_names in by_host.items():
            pipe = layer.connection(index).pipeline(transaction=False)
            for name in host_names:
                pipe.zcard(f"{layer.prefix}:group:{name}")
            counts = await pipe.execute()
            found.update(name for name, count in zip(host_names, counts, strict=True) if count)
        return found
    except Exception:
        # Only an optimisation: whatever went wrong, sending to every group is correct.
        logger.debug("Could not count watchers; notifying every group", exc_info=True)
        return None


# -- group member changes ----------------------------------------------------------------------


def member_limit() -> int:
    """``GROUP_PRESENCE_MAX_MEMBERS``: above it a group reports a count only."""
    return int(number_setting("GROUP_PRESENCE_MAX_MEMBERS"))


async def announce_member_change(change: MemberChange, *, origin: str = "") -> None:
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
    try:
        await layer.group_send(
            groups.client_group(change.group),
            {
                "type": protocol.EVENT_GROUP_MEMBER,
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
        # At-most-once like every layer message; members read the list again on join.
        logger.exception("Could not announce a member change of group %r", change.group)


# -- reconcile -------------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    """What :func:`reconcile` repaired: primary keys marked online and offline."""

    marked_online: list[Any] = field(default_factory=list)
    marked_offline: list[Any] = field(default_factory=list)
    #: How many users the backend held online when the reconcile began.
    online_in_backend: int = 0


async def reconcile(
    *, batch_size: int = RECONCILE_BATCH, progress: Callable[[int, int], object] | None = None
) -> ReconcileResult:
    """Make the database copy agree with the backend, and announce what it repairs.

    A user the backend holds online whose row says offline, or the reverse, is a
    transition whose side effects were lost (a process died between the backend's
    decision and its write, or the backend lost its data). Each is applied now, as the
    backend's own transitions are: the row is written, the signal sent, the watchers told.
    Reads who is online once, then goes through the users ``batch_size`` at a time; a
    user about to be marked offline is checked again first, so one who came online
    meanwhile is left alone. ``progress(done, total)`` is called after every batch.

    Does nothing when no database copy is kept (``syncs_user_model()`` is False).
    """
    result = ReconcileResult()
    copy = database_copy()
    if copy is None:
        return result
    backend = get_backend()
    online = sorted(await backend.all_online_user_ids(), key=key_order)
    result.online_in_backend = len(online)
    db_online = await database_sync_to_async(lambda: [str(pk) for pk in copy.online_pks()])()
    online_set = set(online)
    total, done = len(online) + len(db_online), 0

    def rows_offline(keys: list[str]) -> list[str]:
        return [str(pk) for pk in copy.not_online([pk_from_key(key) for key in keys])]

    for start in range(0, len(online), batch_size):
        batch = online[start : start + batch_size]
        missed = await database_sync_to_async(rows_offline)(batch)
        found = await _availability(backend, missed)
        await apply([_repair(key, Transition.ONLINE, found.get(key)) for key in missed])
        result.marked_online += [pk_from_key(key) for key in missed]
        done += len(batch)
        if progress is not None:
            progress(done, total)
    for start in range(0, len(db_online), batch_size):
        batch = db_online[start : start + batch_size]
        stale = [key for key in batch if key not in online_set]
        if stale:
            came_online = await backend.online_user_ids(stale)
            stale = [key for key in stale if key not in came_online]
        await apply([_repair(key, Transition.OFFLINE) for key in stale])
        result.marked_offline += [pk_from_key(key) for key in stale]
        done += len(batch)
        if progress is not None:
            progress(done, total)
    if result.marked_online or result.marked_offline:
        logger.info(
            "Reconciled the database with the backend: %d users marked online, %d offline",
            len(result.marked_online),
            len(result.marked_offline),
            extra={"server": SERVER_ID},
        )
    return result


async def _availability(backend: Any, keys: Sequence[str]) -> dict[str, Availability]:
    if not keys:
        return {}
    try:
        found: dict[str, Availability] = await backend.availability(keys)
    except NotImplementedError:  # a backend written before states: plain online
        return {}
    return found


def _repair(key: str, transition: Transition, found: Availability | None = None) -> Change:
    # Seq numbers are floored at the clock in microseconds by the backends, so one taken
    # from the clock orders this transition after every one the subscribers saw. A user
    # repaired online is announced as others see them (not at all when invisible).
    seq = time.time_ns() // 1000
    if found is None:
        return Change(key, transition, 0, seq)
    hidden = found.status == "invisible"
    presence = found.presence if found.presence.online else None
    return Change(key, transition, 0, seq, presence=presence, hidden=hidden)
