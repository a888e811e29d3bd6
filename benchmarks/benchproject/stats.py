"""Counters a server keeps for the harness: sockets in flight and presence events per user.

The events are the variant's own notion of "user online" / "user offline": the package's
``user_online`` / ``user_offline`` signals, django-channels-presence's ``presence_changed``
(one per socket, its only event), or the original design's own decisions.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

_lock = threading.Lock()
_online: Counter[str] = Counter()
_offline: Counter[str] = Counter()
_gauges: dict[str, float] = {
    "active": 0,
    "started": 0,
    "connected": 0,
    "finished": 0,
    "errors": 0,
    # Wall-clock time of the last connect handler done / last connection cleaned up, so
    # the harness can time a phase exactly however coarsely it polls.
    "last_connected_at": 0.0,
    "last_finished_at": 0.0,
}


def record(kind: str, user_id: Any) -> None:
    """Count one ``online`` or ``offline`` event of ``user_id``."""
    with _lock:
        (_online if kind == "online" else _offline)[str(user_id)] += 1


def socket_started() -> None:
    """A WebSocket connection reached the application."""
    with _lock:
        _gauges["active"] += 1
        _gauges["started"] += 1


def connect_done() -> None:
    """A consumer finished its connect handler (accepted and did its presence work)."""
    with _lock:
        _gauges["connected"] += 1
        _gauges["last_connected_at"] = time.time()


def socket_finished(failed: bool) -> None:
    """The application returned for one WebSocket connection (all its cleanup done)."""
    with _lock:
        _gauges["active"] -= 1
        _gauges["finished"] += 1
        _gauges["errors"] += failed
        _gauges["last_finished_at"] = time.time()


def snapshot() -> dict[str, Any]:
    """Everything counted since the last reset."""
    with _lock:
        return {**_gauges, "online": dict(_online), "offline": dict(_offline)}


def reset() -> None:
    """Forget the events and the started/finished counts (not the sockets still open)."""
    with _lock:
        _online.clear()
        _offline.clear()
        _gauges.update(started=0, connected=0, finished=0, errors=0)


def connect_receivers() -> None:
    """Count the events of the variant this process runs."""
    from django.conf import settings

    variant = settings.BENCH_VARIANT
    if variant == "package-cheap":
        from channels.layers import get_channel_layer

        from django_presence.signals import user_offline, user_online

        # Issue 17's receiver: one group_send per transition, as an app would notify.
        async def notify(kind: str, user_id: Any) -> None:
            record(kind, user_id)
            await get_channel_layer().group_send(
                "bench-watchers", {"type": "bench.status", "user_id": user_id, "kind": kind}
            )

        async def cheap_online(sender: Any, user_id: Any, **kwargs: Any) -> None:
            await notify("online", user_id)

        async def cheap_offline(sender: Any, user_id: Any, **kwargs: Any) -> None:
            await notify("offline", user_id)

        user_online.connect(cheap_online, weak=False)
        user_offline.connect(cheap_offline, weak=False)
    elif variant in ("package", "user"):
        from django_presence.signals import user_offline, user_online

        # Async receivers: a sync one would cost the package a thread hop per event.
        async def on_online(sender: Any, user_id: Any, **kwargs: Any) -> None:
            record("online", user_id)

        async def on_offline(sender: Any, user_id: Any, **kwargs: Any) -> None:
            record("offline", user_id)

        user_online.connect(on_online, weak=False)
        user_offline.connect(on_offline, weak=False)
    elif variant == "peer":
        from channels_presence.signals import presence_changed

        def on_change(sender: Any, added: Any = None, removed: Any = None, **kwargs: Any) -> None:
            if added is not None:
                record("online", added.user_id)
            if removed is not None:
                record("offline", removed.user_id)

        presence_changed.connect(on_change, weak=False)
