"""The public API, callable from anywhere in a Django project.

- :data:`user_online_service`: who is online; connections, disconnects, reconcile.
- :data:`user_messaging_service`: reach any user, group or everyone in real time.
- :data:`group_presence_service`: who is in each client group.

Every method of :data:`user_online_service` has a sync and an async form (Django's ``a``
prefix convention); :data:`user_messaging_service`'s methods are coroutines, as existing
code awaits them, with sync twins suffixed ``_sync``.
"""

from ..ids import SERVER_ID, new_connection_id
from .groups import GroupPresenceService, group_presence_service
from .messaging import UserMessagingService, user_messaging_service
from .online import PresenceState, UserOnlineService, user_online_service

__all__ = [
    "SERVER_ID",
    "GroupPresenceService",
    "PresenceState",
    "UserMessagingService",
    "UserOnlineService",
    "group_presence_service",
    "new_connection_id",
    "user_messaging_service",
    "user_online_service",
]
