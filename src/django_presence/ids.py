"""Identifiers: user ids in their three forms, connection ids, and this server's id.

A user id travels in three forms, and every conversion between them happens here:

- the **primary key** (``user.pk``: an int, a str or a UUID), what project code passes to
  the services and receives in signals;
- the **key**, ``str(pk)``, what the presence backend stores (:func:`user_key`, and back
  with :func:`pk_from_key`);
- the **wire form**, what JSON frames and channel-layer events carry: the primary key
  itself when it is an int, its string otherwise (:func:`wire_user_id`).

A client's user id (from a frame) is parsed by :func:`parse_client_user_id`, which refuses
anything that cannot be a primary key of the user model.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

#: Identifies this server process in connection records (shown by monitoring, and in the
#: ``server`` field of log records): ``hostname:pid``.
SERVER_ID = f"{socket.gethostname()}:{os.getpid()}"

# Integer primary keys beyond a signed 64-bit column cannot exist; refusing them early
# keeps an overflow from reaching the database.
_MAX_INT_ID = 2**63
_MAX_STR_ID = 255


def new_connection_id() -> str:
    """A new random connection id."""
    return uuid.uuid4().hex


def check_user_id(user_id: Any, name: str = "user_id") -> Any:
    """Return ``user_id`` if it can be a user's primary key, else raise TypeError.

    ``name`` is the argument's name, for the message.
    """
    if (
        user_id is None
        or isinstance(user_id, bool)
        or not isinstance(user_id, (int, str, uuid.UUID))
    ):
        raise TypeError(
            f"{name} must be a user's primary key (an int, str or UUID), got "
            f"{type(user_id).__name__}: {user_id!r}"
        )
    return user_id


def user_key(user_id: Any) -> str:
    """The backend's key of a user: ``str(pk)``, after :func:`check_user_id`."""
    return str(check_user_id(user_id))


def check_connection_id(connection_id: Any) -> str:
    """Return ``connection_id`` if it is a non-empty str, else raise TypeError."""
    if not isinstance(connection_id, str) or not connection_id:
        raise TypeError(
            f"connection_id must be a non-empty str, got {type(connection_id).__name__}: "
            f"{connection_id!r}"
        )
    return connection_id


def pk_from_key(key: str) -> Any:
    """The user model's primary key value for the backend key ``key``.

    Raises :class:`django.core.exceptions.ValidationError` when the model cannot parse it.
    """
    return get_user_model()._meta.pk.to_python(key)


def pk_or_none(key: str) -> Any:
    """Like :func:`pk_from_key`, but None for a key the user model cannot parse."""
    try:
        return pk_from_key(key)
    except ValidationError:
        return None


def key_order(key: str) -> tuple[int, str]:
    """A sort key for backend keys: numeric keys in numeric order, after any others."""
    return (len(key), key) if key.isdigit() else (0, key)


def wire_user_id(user_id: Any) -> Any:
    """A user id as it travels: the primary key's Python value if it is an int, else str.

    Accepts a primary key or the string form the presence backend stores.
    """
    if isinstance(user_id, str):
        try:
            user_id = pk_from_key(user_id)
        except (ValidationError, ValueError, TypeError):
            # An id the user model cannot parse travels as it came.
            return user_id
    return user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else str(user_id)


def parse_client_user_id(value: Any) -> Any:
    """A user id sent by a client, converted to the primary key's type.

    Raises ValueError for anything that cannot be a primary key: booleans, floats,
    integers out of a 64-bit column's range (as numbers or as strings), strings the
    primary key field rejects, text that is not valid Unicode.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or (isinstance(value, int) and abs(value) >= _MAX_INT_ID)
        or (isinstance(value, str) and not (0 < len(value) <= _MAX_STR_ID and encodable(value)))
    ):
        raise ValueError(f"not a user id: {value!r:.60}")
    try:
        pk = get_user_model()._meta.pk.to_python(value)
    except ValidationError:
        raise ValueError(f"not a user id: {value!r:.60}") from None
    if pk is None or (isinstance(pk, int) and abs(pk) >= _MAX_INT_ID):
        raise ValueError(f"not a user id: {value!r:.60}")
    return pk


def pk_from_claim(value: Any) -> Any:
    """The primary key a token's user id claim names, or ValueError.

    Only an integer, or a string in the primary key's exact form (a UUID's canonical
    text, an integer's decimal digits), identifies a user: ``1.9``, ``true``, ``"01"`` or
    ``" 1"`` would all name user 1 through a lenient conversion, and are refused.
    """
    pk = parse_client_user_id(value)
    if isinstance(value, str) and str(pk) != value:
        raise ValueError(f"not the exact form of a primary key: {value!r:.60}")
    return pk


def encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate), so UTF-8 and msgpack take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
