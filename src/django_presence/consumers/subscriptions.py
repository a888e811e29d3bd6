"""What one ``ws/user/`` connection has told its client about the users it watches.

``subscribe_presence`` sends a snapshot, then ``status_changed`` diffs. The connection
keeps, per watched user, the ``seq`` of the last transition it sent and the state it
sent, so that it drops a diff the snapshot already had, a diff older than one it sent,
and a diff that would repeat the state the client has. The runtime's resync reads the
backend every beat and makes good a transition whose diff the channel layer lost.

Pure state: the consumer does the sending.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any


class Subscriptions:
    """The users one connection watches, with the last ``seq`` and state it sent each."""

    def __init__(self) -> None:
        self._seq: dict[str, int] = {}  # watched user key -> seq of the last status sent
        # Watched user key -> the last state sent (a bool, or what the watcher saw of a
        # PublicPresence: anything comparable).
        self._online: dict[str, Hashable] = {}
        self._pending: dict[str, int] = {}  # watched user key -> seq seen by one resync

    def __contains__(self, key: object) -> bool:
        return key in self._seq

    def __len__(self) -> int:
        return len(self._seq)

    def __iter__(self) -> Iterator[str]:
        return iter(self._seq)

    def watch(self, key: str) -> None:
        """Start watching ``key`` (before joining its group, so a failure cleans up)."""
        self._seq.setdefault(key, 0)

    def snapshot(self, key: str, online: Hashable, seq: int) -> None:
        """Record the state the client was sent for ``key`` in a ``presence_state``."""
        self._seq[key] = max(self._seq.get(key, 0), seq)
        self._online[key] = online

    def forget(self, key: str) -> bool:
        """Stop watching ``key`` and forget everything about it; True if it was watched."""
        self._online.pop(key, None)
        self._pending.pop(key, None)
        return self._seq.pop(key, None) is not None

    def clear(self) -> None:
        """Forget every watched user."""
        self._seq.clear()
        self._online.clear()
        self._pending.clear()

    def update(self, key: str, online: Hashable, seq: int) -> bool:
        """A transition of ``key`` arrived: True when the client must be told of it.

        False for a user not watched, a transition not newer than the last one sent, or
        one that repeats the state the client already has.
        """
        last = self._seq.get(key)
        if last is None or seq <= last:
            return False
        self._seq[key] = seq
        if self._online.get(key) == online:
            return False
        self._online[key] = online
        return True

    def resync(self, snapshot: Mapping[str, tuple[Any, int]]) -> Iterable[tuple[str, Any, int]]:
        """The ``(key, online, seq)`` the client must be told of, after a backend read.

        A transition newer than the last one sent is reported only when two reads in a
        row saw it: at the first, its own message (which carries the exact ``last_seen``)
        may still be on its way.
        """
        for key, last in list(self._seq.items()):
            online, seq = snapshot.get(key, (None, 0))
            if seq <= last:
                self._pending.pop(key, None)
                continue
            if self._pending.get(key) != seq:
                self._pending[key] = seq
                continue
            del self._pending[key]
            if self.update(key, online, seq):
                yield key, online, seq
