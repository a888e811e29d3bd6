"""Presence: :data:`user_online_service`.

:data:`user_online_service` answers who is online and applies the side effects of every
transition the backend decides: the ``is_online``/``last_seen`` write, the
:mod:`~django_presence.signals`, and ``status_changed`` to the user's watchers.

Every method has a sync and an async form, following Django's ``a`` prefix convention
(``is_user_online`` / ``ais_user_online``). Sync forms may be called from views,
management commands, Celery tasks and plain threads; from async code, await the ``a`` form.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, NamedTuple

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import models
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from .. import groups, metrics, signals
from ..backends import Change, Transition, get_backend
from ..conf import number_setting, presence_settings
from .messaging import wire_user_id

logger = logging.getLogger(__name__)

#: Identifies this server process in connection records (shown by monitoring).
SERVER_ID = f"{socket.gethostname()}:{os.getpid()}"

# Re-checks of the backend after a DB write, to undo a write that raced with a newer
# transition of the same user in another process (see UserOnlineService._sync_db).
_MAX_DB_SYNC_ROUNDS = 5


def new_connection_id() -> str:
    """A new random connection id."""
    return uuid.uuid4().hex


def _user_key(user_id: Any) -> str:
    if (
        user_id is None
        or isinstance(user_id, bool)
        or not isinstance(user_id, (int, str, uuid.UUID))
    ):
        raise TypeError(
            "user_id must be a user's primary key (an int, str or UUID), got "
            f"{type(user_id).__name__}: {user_id!r}"
        )
    return str(user_id)


def _connection_key(connection_id: Any) -> str:
    if not isinstance(connection_id, str) or not connection_id:
        raise TypeError(
            f"connection_id must be a non-empty str, got {type(connection_id).__name__}: "
            f"{connection_id!r}"
        )
    return connection_id


class _UserLocks:
    """One lock per user key in use, per event loop; unused locks are dropped.

    Holding a user's lock from the backend call until the side effects are applied makes
    this process deliver that user's signals and watcher messages in the order the
    backend decided the transitions (a page reload without grace period is an OFFLINE
    and an ONLINE a few milliseconds apart). Other processes are ordered by ``seq`` only.

    A receiver of those signals may itself change the same user's presence (log out a
    banned user as they come online): code running on behalf of a holder, in any task or
    thread it started, sees the key in a context variable and does not wait for the
    lock, which would never be released.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, tuple[asyncio.Lock, int]]
        ] = weakref.WeakKeyDictionary()
        self._held: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
            "django_presence_user_locks_held", default=frozenset()
        )

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` in the running loop."""
        held = self._held.get()
        if key in held:
            yield
            return
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        lock, users = locks.get(key) or (asyncio.Lock(), 0)
        locks[key] = (lock, users + 1)
        try:
            async with lock:
                token = self._held.set(held | {key})
                try:
                    yield
                finally:
                    self._held.reset(token)
        finally:
            lock, users = locks[key]
            if users == 1:
                del locks[key]
            else:
                locks[key] = (lock, users - 1)


_user_locks = _UserLocks()


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


def _pk_from_key(key: str) -> Any:
    return get_user_model()._meta.pk.to_python(key)


def _user_model_has_presence_fields() -> bool:
    names = {f.name for f in get_user_model()._meta.get_fields()}
    return {"is_online", "last_seen"} <= names


class UserOnlineService:
    """Who is online, and the side effects of coming online and going offline.

    A user is online while they hold at least one unexpired connection lease in the
    backend, plus ``OFFLINE_GRACE_PERIOD`` after their last connection closed cleanly.
    """

    # -- async API -------------------------------------------------------------------------

    async def aadd_user_connection(
        self, user_id: Any, connection_id: str | None = None, *, server: str = SERVER_ID
    ) -> str:
        """Register a connection of ``user_id``; return its id (generated if not given)."""
        key = _user_key(user_id)
        connection_id = new_connection_id() if connection_id is None else connection_id
        _connection_key(connection_id)
        ttl = number_setting("CONNECTION_TTL", allow_zero=False)
        async with _user_locks.hold(key):
            change = await get_backend().add_connection(key, connection_id, ttl=ttl, server=server)
            applied = self._enqueue([change])
        await applied
        return connection_id

    async def aremove_user_connection(
        self, user_id: Any, connection_id: str, *, grace: float | None = None
    ) -> None:
        """Remove a connection. The user goes offline when it was their last one.

        ``grace`` defaults to ``OFFLINE_GRACE_PERIOD``: the user then stays online that
        long, and a reconnect within it causes no transition at all.
        """
        key = _user_key(user_id)
        _connection_key(connection_id)
        if grace is None:
            grace = number_setting("OFFLINE_GRACE_PERIOD")
        async with _user_locks.hold(key):
            change = await get_backend().remove_connection(key, connection_id, grace=grace)
            applied = self._enqueue([change])
        await applied

    async def ais_user_online(self, user_id: Any) -> bool:
        """Whether the user has a live connection (or is within the grace period)."""
        return await get_backend().is_online(_user_key(user_id))

    async def aget_user_connection_count(self, user_id: Any) -> int:
        """How many connections the user has open now (grace periods not counted)."""
        return await get_backend().connection_count(_user_key(user_id))

    async def acleanup_user_connections(self, user_id: Any) -> int:
        """Remove all of the user's connections with no grace; return how many there were.

        The user goes offline at once (DB, signals, watchers). Sockets that are still open
        register again on their next heartbeat; to close them, see the monitoring docs.
        """
        key = _user_key(user_id)
        async with _user_locks.hold(key):
            removed, change = await get_backend().remove_user(key)
            applied = self._enqueue([change])
        await applied
        return removed

    async def aget_online_user_ids(self, user_ids: Iterable[Any]) -> set[Any]:
        """Which of ``user_ids`` are online, in one backend round trip.

        Returns the ids as they were given.
        """
        by_key = {_user_key(user_id): user_id for user_id in user_ids}
        online = await get_backend().online_user_ids(by_key)
        return {by_key[key] for key in online}

    async def asweep(self) -> int:
        """Remove expired connections now and apply the offline transitions they cause.

        Server processes sweep on their own every ``HEARTBEAT_INTERVAL``; this is for
        management commands and tests. Returns how many connections were removed.
        """
        result = await get_backend().sweep()
        await self.apply_changes(result.changes)
        return result.removed

    async def aheartbeat(self, connections: Sequence[tuple[Any, str]]) -> None:
        """Extend the leases of ``(user_id, connection_id)`` pairs in one round trip."""
        pairs = [(_user_key(user_id), connection_id) for user_id, connection_id in connections]
        restored = await get_backend().heartbeat(
            pairs, ttl=number_setting("CONNECTION_TTL", allow_zero=False), server=SERVER_ID
        )
        await self.apply_changes([change for _, change in restored])

    async def adisconnect_user(self, user_id: Any) -> int:
        """Close all of the user's sockets, on every server, and take them offline now.

        The sockets are closed with code 4010 (``control.CLOSE_DISCONNECTED``) by the
        server processes holding them; the user's presence is removed at once, with no
        grace period, so they are shown offline even if a message to a server is lost.
        Called on logout and password change by default. A client that still holds a
        valid token may connect again: revoke the token too where that matters.
        Returns how many connections were registered.
        """
        from ..control import adisconnect_user

        key = _user_key(user_id)
        await adisconnect_user(key)
        return await self.acleanup_user_connections(user_id)

    async def areconcile(self) -> None:
        """Set is_online=False (and last_seen) for users the backend does not hold online."""
        if not presence_settings.SYNC_USER_MODEL or not _user_model_has_presence_fields():
            return
        manager = get_user_model()._default_manager
        stale = await database_sync_to_async(
            lambda: [str(pk) for pk in manager.filter(is_online=True).values_list("pk", flat=True)]
        )()
        online = await get_backend().online_user_ids(stale)
        gone = [key for key in stale if key not in online]
        if gone:
            logger.info(
                "Marked %d users offline that the backend does not hold online",
                len(gone),
                extra={"user_ids": gone, "server": SERVER_ID},
            )
            await self.apply_changes(
                # Redis's seq is floored at its clock in microseconds: use the same scale so
                # that subscribers order this transition after the ones they saw.
                [Change(key, Transition.OFFLINE, 0, time.time_ns() // 1000) for key in gone]
            )

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
        return get_backend().is_online_sync(_user_key(user_id))

    def get_user_connection_count(self, user_id: Any) -> int:
        """Sync form of :meth:`aget_user_connection_count`."""
        _refuse_in_event_loop("get_user_connection_count")
        return get_backend().connection_count_sync(_user_key(user_id))

    def cleanup_user_connections(self, user_id: Any) -> int:
        """Sync form of :meth:`acleanup_user_connections`."""
        return async_to_sync(self.acleanup_user_connections)(user_id)

    def get_online_user_ids(self, user_ids: Iterable[Any]) -> set[Any]:
        """Sync form of :meth:`aget_online_user_ids`."""
        _refuse_in_event_loop("get_online_user_ids")
        by_key = {_user_key(user_id): user_id for user_id in user_ids}
        return {by_key[key] for key in get_backend().online_user_ids_sync(by_key)}

    def sweep(self) -> int:
        """Sync form of :meth:`asweep`."""
        return async_to_sync(self.asweep)()

    def disconnect_user(self, user_id: Any) -> int:
        """Sync form of :meth:`adisconnect_user`."""
        return async_to_sync(self.adisconnect_user)(user_id)

    # -- transitions -----------------------------------------------------------------------

    async def apply_changes(self, changes: Iterable[Change]) -> None:
        """Apply the side effects of backend transitions, in order; return when applied.

        For the changes that are transitions: write ``is_online``/``last_seen`` (when
        ``SYNC_USER_MODEL`` is on), send :data:`~django_presence.signals.user_online` or
        :data:`~django_presence.signals.user_offline`, then ``status_changed`` to the
        user's watchers. A failure of one side effect is logged and does not stop the
        others: the backend's decision stands.

        Concurrent calls in one event loop are applied together, in the order they were
        made (group commit): one thread hop and at most two ``UPDATE`` statements for the
        whole batch, one Redis round trip to skip the watchers groups nobody is in. A
        batch is cut ``TRANSITION_BATCH_WINDOW`` seconds after its first transition
        arrived, or at once when that is 0; under load, the transitions that arrive while a
        batch is being applied make the next one.
        """
        await self._enqueue(changes)

    def _enqueue(self, changes: Iterable[Change]) -> Awaitable[None]:
        """Queue the transitions among ``changes``; return an awaitable of their side effects.

        Queued synchronously, so the queue holds one process's transitions in the order
        their backend calls returned (a user's calls are serialised by ``_user_locks``).
        """
        transitions = [change for change in changes if change.changed]
        if not transitions:
            return _nothing()
        done = _batcher_for_running_loop().submit(self, transitions)
        if _applying.get():
            # A signal receiver of the batch being applied (or code it started): the
            # transitions go with the next batch; waiting for it would wait for ourselves.
            return _nothing()
        # A cancelled caller cancels ``done`` and stops waiting; its transitions are
        # applied all the same (the batcher skips a cancelled future).
        return done

    async def _apply_batch(self, transitions: Sequence[Change]) -> None:
        now = timezone.now()
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
        if presence_settings.SYNC_USER_MODEL:
            try:
                await self._sync_db(transitions, now)
            except Exception:
                logger.exception("Could not write is_online for %d users", len(transitions))
        for change in transitions:
            await self._send_signal(change)
        await self._notify_watchers(transitions, now)

    async def _sync_db(self, transitions: Sequence[Change], now: Any) -> None:
        """Write the transitions to the user table, then make sure no newer one was lost.

        Two processes may write the same user's row in the opposite order of the
        transitions they observed. Each writer therefore reads the backend again after its
        write and corrects any row that no longer matches; the last writer always reads
        after the last transition, so the DB converges on the backend's state.
        """
        state = {change.user_id: change.transition is Transition.ONLINE for change in transitions}
        for _ in range(_MAX_DB_SYNC_ROUNDS):
            await database_sync_to_async(_write_online_state)(state, now)
            actual = await get_backend().online_user_ids(state)
            state = {
                key: key in actual for key, online in state.items() if (key in actual) != online
            }
            if not state:
                return
        logger.warning(
            "is_online of users %s kept changing while being written",
            sorted(state),
            extra={"user_ids": sorted(state), "server": SERVER_ID},
        )

    async def _send_signal(self, change: Change) -> None:
        online = change.transition is Transition.ONLINE
        signal = signals.user_online if online else signals.user_offline
        # Robust: a receiver that raises does not keep the others from hearing of the
        # transition (plain send() stops at the first exception).
        try:
            kwargs = {"user_id": _pk_from_key(change.user_id), "seq": change.seq}
            if hasattr(signal, "asend_robust"):
                responses = await signal.asend_robust(sender=UserOnlineService, **kwargs)
            else:  # Django 4.2
                send = sync_to_async(signal.send_robust)
                responses = await send(sender=UserOnlineService, **kwargs)
        except Exception:  # not a receiver's: the user id, or the dispatch itself
            logger.exception(
                "Could not send %s for user %s",
                "user_online" if online else "user_offline",
                change.user_id,
                extra={"user_id": change.user_id, "server": SERVER_ID},
            )
            return
        for receiver, response in responses:
            if isinstance(response, Exception):
                logger.error(
                    "The %s receiver %s.%s failed for user %s",
                    "user_online" if online else "user_offline",
                    getattr(receiver, "__module__", "?"),
                    getattr(receiver, "__qualname__", repr(receiver)),
                    change.user_id,
                    exc_info=response,
                    extra={"user_id": change.user_id, "server": SERVER_ID},
                )

    async def _notify_watchers(self, transitions: Sequence[Change], now: Any) -> None:
        layer = get_channel_layer(presence_settings.CHANNEL_LAYER)
        if layer is None:
            return
        keys = list(dict.fromkeys(change.user_id for change in transitions))
        names = {key: groups.watchers_group(_pk_from_key(key)) for key in keys}
        watched = await _groups_with_members(layer, list(names.values()))
        sends = [
            self._send_status(layer, names[change.user_id], change, now)
            for change in transitions
            if watched is None or names[change.user_id] in watched
        ]
        # A few at a time: each send holds one of the layer's pooled connections. One
        # user's transitions stay in order: a batch rarely holds two of the same user, and
        # subscribers drop any update whose seq is not newer than the last they saw.
        for start in range(0, len(sends), _CONCURRENT_SENDS):
            await asyncio.gather(*sends[start : start + _CONCURRENT_SENDS])

    async def _send_status(self, layer: Any, group: str, change: Change, now: Any) -> None:
        online = change.transition is Transition.ONLINE
        user_id = _pk_from_key(change.user_id)
        try:
            # One retry: after a Redis restart the layer's first send fails on a pooled
            # connection that died with the old server; the retry gets a fresh one.
            for attempt in (1, 2):
                try:
                    await layer.group_send(
                        group,
                        {
                            "type": "presence.status",
                            # JSON-safe (a UUID key would not survive msgpack).
                            "user_id": wire_user_id(user_id),
                            "is_online": online,
                            "last_seen": None if online else now.isoformat(),
                            "seq": change.seq,
                        },
                    )
                    break
                except RedisConnectionError:
                    if attempt == 2:
                        raise
        except Exception:
            logger.exception(
                "Could not notify the watchers of user %s",
                change.user_id,
                extra={"user_id": change.user_id, "server": SERVER_ID},
            )


# status_changed sends in flight at once per batch.
_CONCURRENT_SENDS = 8

# True in the task applying a batch, and in whatever its signal receivers call.
_applying: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "django_presence_applying", default=False
)


class _Batcher:
    """The transitions of one event loop waiting for their side effects (group commit)."""

    def __init__(self) -> None:
        self.pending: list[_Pending] = []
        self.task: asyncio.Task[None] | None = None

    def submit(
        self, service: UserOnlineService, transitions: Sequence[Change]
    ) -> asyncio.Future[None]:
        """Queue ``transitions``; the future is done when their side effects were applied."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self.pending.append(_Pending(service, transitions, done, nested=_applying.get()))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run(), name="django_presence side effects")
        return done

    async def _run(self) -> None:
        _applying.set(True)
        while self.pending:
            try:
                window = number_setting("TRANSITION_BATCH_WINDOW")
            except Exception:  # reported by check django_presence.E004
                window = 0
            # Let the callers that are ready now join this batch, and wait for more when
            # a window is set.
            await asyncio.sleep(window)
            applied: list[_Pending] = []
            try:
                batch, self.pending = self.pending, []
                while batch:
                    await _apply_in_order(batch)
                    applied += batch
                    # Transitions that this batch's signal receivers caused are part of
                    # it: its callers return when those were applied too.
                    batch = []
                    if any(item.nested for item in self.pending):
                        batch, self.pending = self.pending, []
            except BaseException:
                for item in applied + batch + self.pending:
                    if not item.done.done():
                        item.done.cancel()
                self.pending = []
                raise
            for item in applied:
                if not item.done.done():
                    item.done.set_result(None)


class _Pending(NamedTuple):
    service: UserOnlineService
    transitions: Sequence[Change]
    done: asyncio.Future[None]
    nested: bool


async def _apply_in_order(batch: Sequence[_Pending]) -> None:
    """Apply a batch, one call per run of items queued by the same service instance."""
    run: list[Change] = []
    service = batch[0].service
    for item in batch:
        if item.service is not service:
            await service._apply_batch(run)
            run, service = [], item.service
        run.extend(item.transitions)
    await service._apply_batch(run)


async def _nothing() -> None:
    return None


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
    weakref.WeakKeyDictionary()
)


def _batcher_for_running_loop() -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher()
    return batcher


async def _groups_with_members(layer: Any, names: Sequence[str]) -> set[str] | None:
    """Which of the groups ``names`` have members, in one round trip per layer host.

    Only for channels_redis's ``RedisChannelLayer``, whose ``group_send`` costs two round
    trips even for an empty group; ``None`` (send to all) for any other layer or when the
    check fails. A group whose members all expired counts as having members: sending to
    it is what cleans it up.
    """
    try:
        from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the redis extra is not installed
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
                pipe.zcard(layer._group_key(name))
            counts = await pipe.execute()
            found.update(name for name, count in zip(host_names, counts, strict=True) if count)
        return found
    except Exception:
        logger.debug("Could not count watchers; notifying every group", exc_info=True)
        return None


def _write_online_state(state: dict[str, bool], now: Any) -> None:
    """Set ``is_online`` of the users in ``state``; ``last_seen`` of those going offline."""
    if not _user_model_has_presence_fields():
        return
    user_model: type[models.Model] = get_user_model()
    manager = user_model._default_manager
    online = [_pk_from_key(key) for key, value in state.items() if value]
    offline = [_pk_from_key(key) for key, value in state.items() if not value]
    if online:
        manager.filter(pk__in=online, is_online=False).update(is_online=True)
    if offline:
        manager.filter(pk__in=offline).update(is_online=False, last_seen=now)


#: The process-wide presence service.
user_online_service = UserOnlineService()
