"""Per-room presence: announcing who joins and leaves each client group ("room").

The members of each group are stored by the presence backend (``room_join()``,
``room_leave()``, ``room_members()``... of
:class:`~django_presence.backends.BasePresenceBackend`), which decides every user-level
join and leave. This module tells a group's connections about those changes, and keeps
the memberships this event loop holds alive.

Each membership is a lease of ``CONNECTION_TTL`` seconds. Every server process refreshes
the leases of the memberships it holds every ``HEARTBEAT_INTERVAL`` in one round trip,
and sweeps the expired memberships of the groups it has members in, announcing the users
they take out of a group. The members of a crashed server therefore leave its groups
within ``CONNECTION_TTL + HEARTBEAT_INTERVAL`` seconds, as its users go offline.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from channels.layers import get_channel_layer

from . import groups
from .backends import MemberChange, get_backend
from .conf import number_setting, presence_settings

logger = logging.getLogger(__name__)

#: Channel-layer message type of a member update (handled by ``presence_group_member``).
MEMBER_EVENT = "presence.group_member"


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
        """Stop refreshing a membership (before removing it from the backend)."""
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
        backend = get_backend()
        held = [(group, user, cid) for (group, cid), user in self.memberships.items()]
        await backend.room_refresh(held, ttl=number_setting("CONNECTION_TTL", allow_zero=False))
        for change in await backend.room_sweep({group for group, _, _ in held}):
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
