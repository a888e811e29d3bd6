"""The public API, callable from anywhere in a Django project.

- :data:`user_online_service`: who is online, and the side effects of transitions.
- :data:`user_messaging_service`: reach any user, group or everyone in real time.

Every method of :data:`user_online_service` has a sync and an async form (Django's ``a``
prefix convention); :data:`user_messaging_service`'s methods are coroutines, as existing
code awaits them, with sync twins suffixed ``_sync``.
"""

from .messaging import UserMessagingService, user_messaging_service
from .online import SERVER_ID, UserOnlineService, new_connection_id, user_online_service

__all__ = [
    "SERVER_ID",
    "UserMessagingService",
    "UserOnlineService",
    "new_connection_id",
    "user_messaging_service",
    "user_online_service",
]
