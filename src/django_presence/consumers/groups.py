"""What one ``ws/user/`` connection has told its client about its groups' members.

``join_group`` answers with the member list (or, over ``GROUP_PRESENCE_MAX_MEMBERS``
users, the count only) read together with the group's version; ``group_presence`` updates
follow. A :class:`GroupView` per joined group orders the updates against that list: an
update older than the list, or than a newer update about the same user, is dropped, and
a group that crosses the limit switches the client between members and count-only mode.

:class:`GroupsMixin` gives ``UserConsumer`` its group requests (``join_group``,
``leave_group``) and forwards member updates through the views.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import delivery, groups, protocol
from ..ids import wire_user_id
from ..services.groups import group_presence_service
from ..services.online import user_online_service
from .frames import RequestError, group_field
from .layer import LayerGroupsMixin
from .streams import StreamsMixin, since_field

logger = logging.getLogger(__name__)


class Action(enum.Enum):
    """What to do with a member update: drop it, forward it, or send a fresh list."""

    DROP = "drop"
    SEND = "send"
    SNAPSHOT = "snapshot"


@dataclass
class GroupView:
    """What a connection has told its client about one group's members."""

    full: bool = True  # members mode (False: count-only mode)
    floor: int = 0  # version of the last snapshot; older events are in it
    latest: int = 0  # newest version seen
    count: int = 0
    user_versions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, members: int, version: int, limit: int) -> GroupView:
        """The view after the client was sent a snapshot of ``members`` users."""
        return cls(members <= limit, version, version, members)

    def on_member_event(self, event: dict[str, Any], limit: int) -> tuple[Action, dict[str, Any]]:
        """Decide what a ``presence.group_member`` event means for the client.

        Returns the action and, for :attr:`Action.SEND`, the ``group_presence`` data.
        """
        version = int(event["version"])
        if version <= self.floor:
            return Action.DROP, {}
        name = event["group"]
        if event["count_before"] > limit or event["count"] > limit:
            # The group crosses the limit (updates are sent for crossings only).
            if version <= self.latest:
                return Action.DROP, {}
            self.latest = version
            if event["count"] <= limit:
                return Action.SNAPSHOT, {}
            if not self.full:
                return Action.DROP, {}
            self.full, self.count = False, event["count"]
            return Action.SEND, {"group": name, "count": event["count"], "count_only": True}
        if not self.full:
            # Small again, but this connection missed the crossing: start over.
            return (Action.SNAPSHOT if version > self.latest else Action.DROP), {}
        user = str(event["user_id"])
        if version <= self.user_versions.get(user, 0):
            return Action.DROP, {}
        self.user_versions[user] = version
        if version > self.latest:
            self.latest, self.count = version, event["count"]
        data = {"group": name, "user_id": event["user_id"], "joined": event["joined"]}
        return Action.SEND, {**data, "count": self.count}


class GroupsMixin(StreamsMixin, LayerGroupsMixin):
    """The client-group requests, member updates and group streams of ``UserConsumer``."""

    channel_name: str
    user_key: str
    _member_id: str
    _max_groups: int
    # Provided by UserConsumer and its other bases.
    can_join_group: Callable[[str], Awaitable[bool]]
    send_frame: Callable[..., Awaitable[None]]
    _after_reply: list[dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._groups: dict[str, GroupView] = {}

    async def request_join_group(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``join_group {group, since?}`` -> ``group_joined {group, count, members_online?,
        stream?}``, then the group's messages the client missed after ``since``."""
        name = group_field(data)
        since = since_field(data)
        if name not in self._groups:
            if len(self._groups) >= self._max_groups:
                raise RequestError(
                    protocol.FORBIDDEN,
                    f"A connection may join at most {self._max_groups} groups.",
                )
            if not await self.can_join_group(name):
                raise RequestError(protocol.FORBIDDEN, "You may not join this group.")
            await self.join_layer_group(groups.client_group(name))
            # A placeholder view until the snapshot below, so a failure still leaves.
            self._groups[name] = GroupView()
            await group_presence_service.ajoin(
                name, self.user_key, self._member_id, origin=self.channel_name
            )
        reply = await self._group_snapshot(name)
        stream = delivery.group_stream(name)
        # Only when this connection does not follow the stream yet: joining again is no
        # way to have the history sent over and over.
        if (
            delivery.limits().size
            and stream not in self.cursors
            and (since is not None or self.wants_recovery)
        ):
            async with self._stream_lock:
                info, self._after_reply = await self.follow_streams([(stream, since)])
            reply["stream"] = info[delivery.wire_name(stream)]
        return protocol.GROUP_JOINED, reply

    async def _group_snapshot(self, name: str) -> dict[str, Any]:
        members, version = await group_presence_service.aget_members(name)
        limit = group_presence_service.member_limit()
        view = self._groups[name] = GroupView.from_snapshot(len(members), version, limit)
        data: dict[str, Any] = {"group": name, "count": len(members)}
        if view.full:
            data["members_online"] = [wire_user_id(m) for m in members]
            # Each member's state (online, away, busy), derived as everywhere else.
            states = await user_online_service.aget_presence_state(members)
            data["states"] = {str(wire_user_id(m)): states[str(m)].presence.state for m in members}
        else:
            data["count_only"] = True
        return data

    async def request_leave_group(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``leave_group {group}`` -> ``group_left {group}`` (also if not a member)."""
        name = group_field(data)
        if name in self._groups:
            await self._leave_group(name)
        return protocol.GROUP_LEFT, {"group": name}

    async def _leave_group(self, name: str) -> None:
        self._groups.pop(name, None)
        self.cursors.pop(delivery.group_stream(name), None)
        try:
            await self.leave_layer_group(groups.client_group(name))
            await group_presence_service.aleave(
                name, self.user_key, self._member_id, origin=self.channel_name
            )
        except Exception:
            # The layer or the backend is down: the membership's lease expires by itself
            # and a sweep announces the leave.
            logger.exception(
                "Could not leave group %r cleanly", name, extra=self.get_presence_log_extra()
            )

    def is_group_member(self, name: str) -> bool:
        """Whether this connection joined client group ``name``."""
        return name in self._groups

    async def presence_group_member(self, event: dict[str, Any]) -> None:
        """A user joined or left a joined group -> ``group_presence``.

        Updates are ordered by the group's version: those older than the member list
        this connection sent, or than a newer update about the same user, are dropped.
        """
        name = event["group"]
        view = self._groups.get(name)
        if view is None or event.get("origin") == self.channel_name:
            return
        action, data = view.on_member_event(event, group_presence_service.member_limit())
        if action is Action.SEND:
            await self.send_frame(protocol.GROUP_PRESENCE, data)
        elif action is Action.SNAPSHOT:
            await self.send_frame(protocol.GROUP_PRESENCE, await self._group_snapshot(name))
