"""Group presence: who is in each client group ("room"), across servers.

Channel-layer groups cannot be listed, so the package keeps its own record of the
connections that joined each client group, in the presence backend (see the ``room_*``
methods of :class:`~django_presence.backends.BasePresenceBackend`). Each membership is a
lease of ``CONNECTION_TTL`` seconds that the runtime of the process holding it renews
every ``HEARTBEAT_INTERVAL``, so the members of a crashed server leave its groups within
``CONNECTION_TTL + HEARTBEAT_INTERVAL``, as its users go offline.

A group's count is the number of distinct users with at least one membership; a user's
second tab joins silently. Each user-level join or leave bumps the group's *version*,
which consumers use to order updates against the member list they read.

:data:`group_presence_service` reads group presence from anywhere (``get_members`` in
sync code, ``aget_members`` in async code); ``ajoin``/``aleave`` are what the ``ws/user/``
consumer calls for its connections.

A group that goes from no user to some sends ``group_occupied``, and one that has had no
user for ``OFFLINE_GRACE_PERIOD`` sends ``group_emptied``, each once across processes
(:mod:`~django_presence.occupancy`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from asgiref.sync import async_to_sync

from .. import transitions
from ..backends import get_backend
from ..conf import number_setting
from ..groups import validate_client_group_name
from ..ids import pk_from_key, user_key
from ..runtime import get_runtime


class GroupMembers(NamedTuple):
    """The users in a client group (backend keys) and the group's version, read together."""

    user_keys: list[str]
    version: int


class GroupPresenceService:
    """Join and leave client groups for a connection, and read who is in them."""

    async def ajoin(self, group: str, user_id: Any, member_id: str, *, origin: str = "") -> None:
        """Add the membership ``member_id`` of ``user_id`` to ``group``; tell the members.

        The runtime of the calling event loop renews the membership from now on, until
        :meth:`aleave`. ``origin`` is the channel name of the joining connection, which
        does not hear of its own join.
        """
        validate_client_group_name(group)
        key = user_key(user_id)
        runtime = get_runtime()
        runtime.track_membership(group, key, member_id)
        change = await get_backend().room_join(
            group, key, member_id, ttl=number_setting("CONNECTION_TTL", allow_zero=False)
        )
        await transitions.announce_member_change(change, origin=origin)
        await runtime.member_changed(change)

    async def aleave(self, group: str, user_id: Any, member_id: str, *, origin: str = "") -> None:
        """Remove a membership from ``group`` (nothing happens if it is not there)."""
        key = user_key(user_id)
        runtime = get_runtime()
        runtime.untrack_membership(group, member_id)
        change = await get_backend().room_leave(group, key, member_id)
        await transitions.announce_member_change(change, origin=origin)
        await runtime.member_changed(change)

    async def aget_members(self, group: str) -> GroupMembers:
        """The users in ``group`` and its version, in one backend step."""
        validate_client_group_name(group)
        keys, version = await get_backend().room_members(group)
        return GroupMembers(keys, version)

    async def aget_member_ids(self, group: str) -> list[Any]:
        """The primary keys of the users in ``group``."""
        return [pk_from_key(key) for key in (await self.aget_members(group)).user_keys]

    def get_member_ids(self, group: str) -> list[Any]:
        """Sync form of :meth:`aget_member_ids`."""
        return async_to_sync(self.aget_member_ids)(group)

    @staticmethod
    def member_limit() -> int:
        """``GROUP_PRESENCE_MAX_MEMBERS``: above it a group reports a count only."""
        return transitions.member_limit()


#: The process-wide group presence service.
group_presence_service = GroupPresenceService()
