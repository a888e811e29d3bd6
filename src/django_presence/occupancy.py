"""Group occupancy: a client group announces, once, that it became occupied and that it emptied.

Part of the runtime layer (one :class:`GroupSettles` per
:class:`~django_presence.runtime.Runtime`, hence per event loop). The backend keeps each
group's *occupied flag* (``room_occupied`` / ``room_settle``); this module decides when to
call them and sends the ``group_occupied`` and ``group_emptied`` signals.

- **Occupied.** A join that takes a group from 0 users to 1 sets the flag; the process
  whose call set it sends ``group_occupied``. A group that emptied less than
  ``OFFLINE_GRACE_PERIOD`` ago still has its flag (its emptying was not announced): no
  second ``group_occupied``.
- **Emptied.** A leave or an expiry that leaves a group empty schedules one settle
  ``OFFLINE_GRACE_PERIOD`` later (at once when it is 0): if the group is still empty, the
  backend hands the flag to exactly one caller, across processes, which sends
  ``group_emptied``. A second emptying of the same group in this process within the grace
  period replaces the pending settle, so the group is announced empty a full grace period
  after its last user left (across processes, the first settle may win, up to one grace
  period early).
- **Free when unused.** While no receiver is connected to either signal (receivers are
  connected at startup, in every process alike), nothing is stored or scheduled: no
  backend call beyond the join or leave itself.
- **No leak.** Each pending settle is one task, forgotten when it ends; :meth:`GroupSettles.stop`
  cancels the pending ones (:meth:`Runtime.stop`). A settle cancelled so, or lost with a
  crashed process, leaves the flag to expire with the group's keys (two leases after the
  last join or refresh): that emptying is never announced.

Client-visible frames are unchanged: the joining member gets ``group_joined`` and the
others a member event; nobody is left to tell of an emptying. The signals are the hook.
"""

from __future__ import annotations

import asyncio
import logging

from django.dispatch import Signal

from . import signals
from .backends import MemberChange, get_backend
from .grace_sweeps import cancel_and_wait
from .ids import SERVER_ID

logger = logging.getLogger(__name__)


def fills(change: MemberChange) -> bool:
    """Whether ``change`` took its group from no user to some (a possible occupancy)."""
    return change.changed and change.joined and change.count_before == 0 and change.count > 0


def empties(change: MemberChange) -> bool:
    """Whether ``change`` left its group with no user (a possible emptying)."""
    return change.changed and not change.joined and change.count == 0


async def announce_occupied(group: str) -> None:
    """Set ``group``'s occupied flag; send ``group_occupied`` if this call set it."""
    try:
        if not await get_backend().room_occupied(group):
            return
    except Exception:
        # The join itself succeeded; the group's occupancy goes unannounced (and so
        # does its emptying: no flag was set).
        logger.exception(
            "Could not mark group %r occupied", group, extra={"server": SERVER_ID, "group": group}
        )
        return
    await _send(signals.group_occupied, "group_occupied", group)


async def settle(group: str) -> None:
    """Take ``group``'s occupied flag if it is empty; send ``group_emptied`` if taken."""
    try:
        if not await get_backend().room_settle(group):
            return
    except Exception:
        # The flag stays: the group's next emptying (or the flag's expiry) settles it.
        logger.exception(
            "Could not settle the emptying of group %r",
            group,
            extra={"server": SERVER_ID, "group": group},
        )
        return
    await _send(signals.group_emptied, "group_emptied", group)


async def _send(signal: Signal, name: str, group: str) -> None:
    await signals.send_robustly(
        signal,
        name,
        sender=MemberChange,
        log_extra={"server": SERVER_ID, "group": group},
        group=group,
    )


class GroupSettles:
    """One loop's pending settles of groups that emptied (see the module)."""

    def __init__(self) -> None:
        #: Group -> its settle task, while still waiting for the grace period to pass.
        self._waiting: dict[str, asyncio.Task[None]] = {}
        #: Every task not yet ended, waiting or settling (what :meth:`stop` cancels).
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """How many settles are scheduled or under way."""
        return len(self._tasks)

    def schedule(self, group: str, grace: float) -> None:
        """Settle ``group`` ``grace`` seconds from now, instead of any earlier pending one."""
        earlier = self._waiting.pop(group, None)
        if earlier is not None:
            earlier.cancel()  # still asleep: a waiting task is in _waiting
        task = asyncio.get_running_loop().create_task(
            self._run(group, grace), name="presence group settle"
        )
        self._waiting[group] = task
        self._tasks.add(task)
        # Let go of the task once it ends, so that a finished loop frees this runtime.
        task.add_done_callback(lambda done: self._forget(group, done))

    def _forget(self, group: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._waiting.get(group) is task:  # cancelled while waiting
            del self._waiting[group]

    async def stop(self) -> None:
        """Cancel every pending settle (their flags expire with their groups' keys)."""
        await cancel_and_wait(self._tasks)
        self._waiting.clear()

    async def _run(self, group: str, grace: float) -> None:
        await asyncio.sleep(grace)
        # Awake: from now on this task is not replaced, and a new emptying of the group
        # gets a task of its own.
        if self._waiting.get(group) is asyncio.current_task():
            del self._waiting[group]
        # Shielded: once the backend handed over the flag, the signal must be sent even if
        # stop() cancels this task meanwhile.
        await asyncio.shield(settle(group))


def listened() -> bool:
    """Whether any receiver is connected to ``group_occupied`` or ``group_emptied``."""
    return signals.group_occupied.has_listeners(MemberChange) or (
        signals.group_emptied.has_listeners(MemberChange)
    )


async def member_changed(change: MemberChange, settles: GroupSettles, grace: float) -> None:
    """Apply ``change`` to its group's occupancy: announce it, or schedule its settle."""
    if not listened():
        return
    if fills(change):
        await announce_occupied(change.group)
    elif empties(change):
        if grace > 0:
            settles.schedule(change.group, grace)
        else:
            await settle(change.group)
