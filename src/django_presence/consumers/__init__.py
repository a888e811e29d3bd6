"""Consumers: :class:`UserOnlineStatusMixin` for any consumer, and :class:`UserConsumer`.

Import both from here::

    from django_presence.consumers import UserConsumer, UserOnlineStatusMixin

A ``UserConsumer`` subclass answers a request with an error by raising
:class:`RequestError` (its codes are in :mod:`django_presence.protocol`).
"""

from ..protocol import CLOSE_TOKEN_EXPIRED, TOKEN_SUBPROTOCOL
from .frames import RequestError
from .mixins import UserOnlineStatusMixin
from .user import UserConsumer

__all__ = [
    "CLOSE_TOKEN_EXPIRED",
    "TOKEN_SUBPROTOCOL",
    "RequestError",
    "UserConsumer",
    "UserOnlineStatusMixin",
]
