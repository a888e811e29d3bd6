"""Consumers: :class:`UserOnlineStatusMixin` for any consumer, and :class:`UserConsumer`.

Import both from here::

    from django_presence.consumers import UserConsumer, UserOnlineStatusMixin
"""

from .mixins import CLOSE_TOKEN_EXPIRED, TOKEN_SUBPROTOCOL, UserOnlineStatusMixin
from .user import UserConsumer

__all__ = ["CLOSE_TOKEN_EXPIRED", "TOKEN_SUBPROTOCOL", "UserConsumer", "UserOnlineStatusMixin"]
