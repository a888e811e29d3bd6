"""Channel-layer group names used by the package.

Every group name the package uses comes from here and satisfies Channels' rule
(``^[a-zA-Z\\d\\-_.]+$``, under 100 characters). User input never becomes part of a group
name without validation, and client groups live in their own namespace so they can never
collide with the package's own groups.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

PREFIX = "presence"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
#: Names a client may use for a group (``join_group`` and friends).
CLIENT_GROUP_NAME = re.compile(r"^[A-Za-z0-9_\-.]{1,64}$")


def _id_part(user_id: Any) -> str:
    value = str(user_id)
    if _SAFE_ID.match(value):
        return value
    return "h" + hashlib.sha256(value.encode()).hexdigest()[:40]


def user_group(user_id: Any) -> str:
    """The group holding every open connection of ``user_id``, on every server."""
    return f"{PREFIX}.u.{_id_part(user_id)}"


def watchers_group(user_id: Any) -> str:
    """The group of connections subscribed to ``user_id``'s status changes."""
    return f"{PREFIX}.w.{_id_part(user_id)}"


def broadcast_group() -> str:
    """The group holding every connection of the ``ws/user/`` consumer."""
    return f"{PREFIX}.all"


def validate_client_group_name(name: object) -> str:
    """Return ``name`` if a client may use it as a group name, else raise ValueError."""
    if not isinstance(name, str) or not CLIENT_GROUP_NAME.match(name):
        raise ValueError(
            "A group name must be 1 to 64 characters among letters, digits, '-', '_' and "
            f"'.'; got {name!r}."
        )
    return name


def client_group(name: str) -> str:
    """The channel-layer group of a client-named group (validated first)."""
    return f"{PREFIX}.g.{validate_client_group_name(name)}"
