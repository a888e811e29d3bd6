"""A prototype measured with ``run.py --server-patch``; not part of the package.

``UserOnlineService.apply_changes()`` queues the transitions and returns at once; one task
per event loop flushes the queue every ``BENCH_FLUSH_DELAY`` seconds (default 0.05): one
``_sync_db`` for the whole batch (one thread hop, two ``UPDATE ... WHERE pk IN``, one
``HMGET`` to verify), then the signals in order, then the watchers. With
``BENCH_SKIP_WATCHERS=1`` the watchers' ``group_send`` is skipped: an upper bound of
notifying only users that someone watches.

Only for server processes: a sync caller's event loop ends before the flush would run.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any

from django.utils import timezone

from django_presence.conf import presence_settings
from django_presence.services import online as online_module

FLUSH_DELAY = float(os.environ.get("BENCH_FLUSH_DELAY", "0.05"))
SKIP_WATCHERS = os.environ.get("BENCH_SKIP_WATCHERS") == "1"


class _Queue:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.task: asyncio.Task[None] | None = None


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()


async def _flush(service: Any, queue: _Queue) -> None:
    while queue.items:
        await asyncio.sleep(FLUSH_DELAY)
        batch, queue.items = queue.items, []
        now = timezone.now()
        if presence_settings.SYNC_USER_MODEL:
            try:
                await service._sync_db(batch, now)
            except Exception:
                online_module.logger.exception(
                    "Could not write is_online for %d users", len(batch)
                )
        for change in batch:
            await service._send_signal(change)
        if not SKIP_WATCHERS:
            await service._notify_watchers(batch, now)


async def apply_changes(self: Any, changes: Any) -> None:
    """Queue the transitions' side effects for the loop's flusher."""
    transitions = [change for change in changes if change.changed]
    if not transitions:
        return
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = _Queue()
    queue.items.extend(transitions)
    if queue.task is None or queue.task.done():
        queue.task = loop.create_task(_flush(self, queue))


online_module.UserOnlineService.apply_changes = apply_changes  # type: ignore[method-assign]
