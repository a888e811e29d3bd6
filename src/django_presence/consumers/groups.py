"""What one ``ws/user/`` connection has told its client about its groups' members.

``join_group`` answers with the member list (or, over ``GROUP_PRESENCE_MAX_MEMBERS``
users, the count only) read together with the group's version; ``group_presence`` updates
follow. A :class:`GroupView` per joined group orders the updates against that list: an
update older than the list, or than a newer update about the same user, is dropped, and
a group that crosses the limit switches the client between members and count-only mode.

Pure state: the consumer does the reading and the sending.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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
