"""Checking what a ``ws/user/`` client sends: the frame, its envelope, its fields.

Every check raises :class:`RequestError` with the error code the client gets
(``docs/protocol.md``); nothing here touches the network or the database.
"""

from __future__ import annotations

import re
from typing import Any

from .. import groups, protocol
from ..ids import encodable, parse_client_user_id

#: Request types name ``request_<type>`` methods: lower case, at most 32 characters.
REQUEST_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Longest string ``id`` a request may carry.
MAX_ID_LENGTH = 64


class RequestError(Exception):
    """Raised by a request handler to answer with an ``error`` frame of ``code``.

    ``code`` is one of :data:`django_presence.protocol.ERROR_CODES` (or a code of a
    project's own); ``message`` is for people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def frame_too_large(text: str, limit: int) -> bool:
    """Whether ``text`` is over ``limit`` bytes in UTF-8, encoding only when in doubt."""
    # A str of n characters is n to 4n bytes in UTF-8.
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def valid_request_id(request_id: Any) -> bool:
    """Whether ``request_id`` may be echoed: None, an int, or a short str."""
    return request_id is None or (
        (isinstance(request_id, str) and len(request_id) <= MAX_ID_LENGTH)
        or (isinstance(request_id, int) and not isinstance(request_id, bool))
    )


def user_id_field(value: Any, name: str) -> Any:
    """A client's user id converted to the primary key's type, or RequestError."""
    try:
        return parse_client_user_id(value)
    except ValueError:
        raise RequestError(
            protocol.INVALID_PAYLOAD, f"{name} must be a user id, got {value!r:.60}."
        ) from None


def text_field(data: dict[str, Any], name: str) -> str:
    """``data[name]`` if it is a non-empty string of valid Unicode, else RequestError.

    JSON can carry a lone surrogate (``"\\ud800"``) that neither UTF-8 nor the channel
    layer's msgpack can encode: it is refused here, not when it reaches the layer.
    """
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError(protocol.INVALID_PAYLOAD, f"data.{name} must be a non-empty string.")
    if not encodable(value):
        raise RequestError(
            protocol.INVALID_PAYLOAD, f"data.{name} is not valid Unicode (a lone surrogate)."
        )
    return value


def group_field(data: dict[str, Any]) -> str:
    """``data["group"]`` if it is a valid client group name, else RequestError."""
    try:
        return groups.validate_client_group_name(data.get("group"))
    except ValueError as e:
        raise RequestError(protocol.INVALID_PAYLOAD, str(e)[:200]) from None


def user_ids_field(data: dict[str, Any], limit: int) -> list[Any]:
    """``data["user_ids"]``: 1 to ``limit`` user ids, converted and deduplicated."""
    values = data.get("user_ids")
    if not isinstance(values, list) or not values:
        raise RequestError(
            protocol.INVALID_PAYLOAD, "data.user_ids must be a non-empty list of user ids."
        )
    if len(values) > limit:
        raise RequestError(protocol.INVALID_PAYLOAD, f"data.user_ids holds at most {limit} ids.")
    return list(dict.fromkeys(user_id_field(v, "data.user_ids[]") for v in values))
