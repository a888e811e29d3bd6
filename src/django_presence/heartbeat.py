"""The per-process heartbeat: keeps this process's connection leases alive and sweeps.

One :class:`Heartbeat` exists per running event loop (a server process has one). Every
``HEARTBEAT_INTERVAL`` seconds it extends the leases of all connections the process holds
open, registers again any the backend lost (a Redis restart), and sweeps expired leases of
other processes under a lock, all in one backend round trip (one Lua script on Redis), so
that the users of a crashed server go offline within ``CONNECTION_TTL +
HEARTBEAT_INTERVAL`` without any cron job.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from . import metrics
from .backends import get_backend
from .conf import number_setting

logger = logging.getLogger(__name__)

#: Expired leases removed by one sweep call.
SWEEP_LIMIT = 1000
#: Sweep calls one beat may make when more than SWEEP_LIMIT leases expired at once.
MAX_SWEEPS_PER_BEAT = 10

_heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Heartbeat] = (
    weakref.WeakKeyDictionary()
)


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


class Heartbeat:
    """The live connections of one event loop, and the task that heartbeats them."""

    def __init__(self) -> None:
        self.connections = _Connections()  # connection id -> user key
        self._task: asyncio.Task[None] | None = None

    def track(self, user_key: str, connection_id: str) -> None:
        """Start heartbeating a connection; starts the periodic task if needed."""
        self.connections[connection_id] = user_key
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
            # The task refers to its loop: once it ends (the loop shuts down), let go of
            # it, so that the loop and this heartbeat can be freed.
            self._task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    def untrack(self, connection_id: str) -> None:
        """Stop heartbeating a connection (before removing it from the backend)."""
        self.connections.pop(connection_id, None)

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
                metrics.increment("heartbeat_failures")
                logger.exception(
                    "Presence heartbeat failed (%d connections); retrying in one interval",
                    len(self.connections),
                    extra={"server": _server_id(), "connections": len(self.connections)},
                )

    async def beat(self) -> None:
        """Heartbeat every tracked connection and sweep, in one backend round trip."""
        from .services.online import SERVER_ID, user_online_service

        backend = get_backend()
        interval = number_setting("HEARTBEAT_INTERVAL", allow_zero=False)
        pairs = self.connections.pairs()
        restored, result = await backend.heartbeat_and_sweep(
            pairs,
            ttl=number_setting("CONNECTION_TTL", allow_zero=False),
            server=SERVER_ID,
            limit=SWEEP_LIMIT,
            lock_ttl=interval * 0.9,
        )
        changes = [change for _, change in restored]
        # Connections still open here that the backend had lost: evidence of data loss (a
        # Redis restart), unlike one closed while this beat was under way.
        lost = [cid for cid, _ in restored if cid in self.connections]
        if lost:
            metrics.increment("connections_restored", len(lost))
            logger.warning(
                "The presence backend had lost %d open connections of this server (a Redis "
                "restart?); registered them again",
                len(lost),
                extra={"server": SERVER_ID, "connections": len(lost)},
            )
        # A connection closed while the heartbeat was under way was stored again: undo.
        for connection_id, change in restored:
            if connection_id not in self.connections:
                changes.append(
                    await backend.remove_connection(
                        change.user_id,
                        connection_id,
                        grace=number_setting("OFFLINE_GRACE_PERIOD"),
                    )
                )
        await user_online_service.apply_changes(changes)
        if lost:
            await self._after_data_loss()
        sweeps = [result]
        # More expired leases than one sweep takes (a big server crashed): keep going now
        # rather than one interval later, a bounded number of times.
        while result.removed >= SWEEP_LIMIT and len(sweeps) < MAX_SWEEPS_PER_BEAT:
            result = await backend.sweep(limit=SWEEP_LIMIT)
            sweeps.append(result)
        removed = sum(r.removed for r in sweeps)
        offline = [change for r in sweeps for change in r.changes]
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
        await user_online_service.apply_changes(offline)
        await self._resync_subscriptions(backend)

    async def _resync_subscriptions(self, backend: Any) -> None:
        """Catch up subscribers on transitions whose status_changed the layer dropped."""
        from .control import get_control

        consumers = [ref() for ref in list(get_control().consumers.values())]
        watchers = [c for c in consumers if c is not None and getattr(c, "_watching", None)]
        if not watchers:
            return
        keys: set[str] = set()
        for consumer in watchers:
            keys.update(consumer._watching)
        snapshot = await backend.presence_snapshot(sorted(keys))
        for consumer in watchers:
            await consumer.presence_resync(snapshot)

    async def _after_data_loss(self) -> None:
        """Redis lost data: rejoin channel-layer groups, and reconcile is_online."""
        from .control import get_control

        for ref in list(get_control().consumers.values()):
            consumer = ref()
            rejoin = getattr(consumer, "presence_rejoin_groups", None)
            if rejoin is not None:
                try:
                    await rejoin()
                except Exception:
                    logger.exception(
                        "Could not rejoin channel-layer groups",
                        extra=_consumer_extra(consumer),
                    )
        # Every other server registers its connections again at its own next beat:
        # reconcile only after all of them had one, or live users would be marked offline.
        delay = 1.5 * number_setting("HEARTBEAT_INTERVAL", allow_zero=False)
        self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile(delay))

    async def _reconcile(self, delay: float) -> None:
        from .services.online import user_online_service

        await asyncio.sleep(delay)
        try:
            await user_online_service.areconcile()
        except Exception:
            logger.exception(
                "Could not reconcile is_online after Redis lost data",
                extra={"server": _server_id()},
            )


def _server_id() -> str:
    from .services.online import SERVER_ID

    return SERVER_ID


def _consumer_extra(consumer: Any) -> dict[str, Any]:
    get_extra = getattr(consumer, "get_presence_log_extra", None)
    return get_extra() if get_extra is not None else {"server": _server_id()}


def get_heartbeat() -> Heartbeat:
    """The heartbeat of the running event loop."""
    loop = asyncio.get_running_loop()
    heartbeat = _heartbeats.get(loop)
    if heartbeat is None:
        heartbeat = _heartbeats[loop] = Heartbeat()
    return heartbeat


def tracked_connections() -> dict[str, Any]:
    """Connection id -> user key of the connections this event loop holds open."""
    return dict(get_heartbeat().connections)
