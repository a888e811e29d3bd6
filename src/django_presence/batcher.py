"""The batcher: per-user locks and the group commit of transitions' side effects.

Part of the runtime layer (one :class:`Batcher` per :class:`~django_presence.runtime.Runtime`,
hence per event loop). :meth:`Batcher.hold` keeps a user's operations in the backend's
order within this loop; :meth:`Batcher.submit` queues the transitions a backend call
returned, and one task applies them a batch at a time through
:func:`~django_presence.transitions.apply` (one thread hop and at most two ``UPDATE``
statements per batch). Transitions that a batch's signal receivers cause join that
batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence

from . import transitions
from .backends import Change
from .conf import number_setting
from .exceptions import PresenceImproperlyConfigured

# The user keys whose lock the current task (or whatever it started) holds: a signal
# receiver that changes the same user's presence must not wait for its own caller.
_held: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "django_presence_user_locks_held", default=frozenset()
)
# True in the task applying a batch, and in whatever its signal receivers call.
_applying: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "django_presence_applying", default=False
)


class Batcher:
    """One loop's per-user locks and queue of transitions to apply (see the module)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._pending: list[tuple[Sequence[Change], asyncio.Future[None], bool]] = []
        self._applier: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def hold(self, user_key: str) -> AsyncIterator[None]:
        """Hold ``user_key``'s lock, so this loop applies the user's transitions in order.

        Held from the backend call until the transition is queued, it makes this loop
        deliver a user's signals and watcher messages in the order the backend decided
        them (a page reload without grace period is an OFFLINE and an ONLINE a few
        milliseconds apart). Other processes are ordered by ``seq`` only. Code running on
        behalf of a holder (a signal receiver, in any task or thread it started) does not
        wait for the lock, which would never be released.
        """
        held = _held.get()
        if user_key in held:
            yield
            return
        lock, users = self._locks.get(user_key) or (asyncio.Lock(), 0)
        self._locks[user_key] = (lock, users + 1)
        try:
            async with lock:
                token = _held.set(held | {user_key})
                try:
                    yield
                finally:
                    _held.reset(token)
        finally:
            lock, users = self._locks[user_key]
            if users == 1:
                del self._locks[user_key]
            else:
                self._locks[user_key] = (lock, users - 1)

    def submit(self, changes: Iterable[Change]) -> Awaitable[None]:
        """Queue the transitions among ``changes``; return an awaitable of their side effects.

        Queued synchronously, so the queue holds this loop's transitions in the order
        their backend calls returned (a user's calls are serialised by :meth:`hold`).
        Concurrent submissions are applied together (group commit): one thread hop and at
        most two ``UPDATE`` statements per batch. A batch is cut
        ``TRANSITION_BATCH_WINDOW`` seconds after its first transition arrived, or at once
        when that is 0. A cancelled caller stops waiting; its transitions are applied all
        the same.
        """
        loop = asyncio.get_running_loop()
        pending = [change for change in changes if change.announces]
        if not pending:
            return _nothing(loop)
        done: asyncio.Future[None] = loop.create_future()
        nested = _applying.get()
        self._pending.append((pending, done, nested))
        if self._applier is None or self._applier.done():
            self._applier = loop.create_task(self._apply_pending(), name="presence side effects")
            # The task refers to its loop: once it ends, let go of it, so that a finished
            # loop and its runtime can be freed.
            self._applier.add_done_callback(self._forget_applier)
        if nested:
            # A signal receiver of the batch being applied (or code it started): its
            # transitions join that batch; waiting for it would wait for ourselves.
            return _nothing(loop)
        return done

    def _forget_applier(self, task: asyncio.Task[None]) -> None:
        if self._applier is task:
            self._applier = None

    async def _apply_pending(self) -> None:
        _applying.set(True)
        while self._pending:
            try:
                window = number_setting("TRANSITION_BATCH_WINDOW")
            except PresenceImproperlyConfigured:  # reported by a system check at startup
                window = 0
            # Let the callers that are ready now join this batch, and wait for more when
            # a window is set.
            await asyncio.sleep(window)
            applied: list[asyncio.Future[None]] = []
            batch, self._pending = self._pending, []
            try:
                while batch:
                    await transitions.apply([c for changes, _, _ in batch for c in changes])
                    applied += [done for _, done, _ in batch]
                    # Transitions that this batch's signal receivers caused are part of
                    # it: its callers return when those were applied too.
                    batch = []
                    if any(nested for _, _, nested in self._pending):
                        batch, self._pending = self._pending, []
            except BaseException:
                for done in applied + [done for _, done, _ in batch + self._pending]:
                    if not done.done():
                        done.cancel()
                self._pending = []
                raise
            for done in applied:
                if not done.done():
                    done.set_result(None)


def _nothing(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """An awaitable that is done already (a future: dropping it unawaited is harmless)."""
    done: asyncio.Future[None] = loop.create_future()
    done.set_result(None)
    return done
