"""The public API, callable from anywhere in a Django project.

- :data:`user_online_service`: who is online, and the side effects of transitions.
- :data:`user_messaging_service`: reach any user, group or everyone in real time.

Every method has a sync and an async form (Django's ``a`` prefix convention).
"""

from .online import SERVER_ID, UserOnlineService, new_connection_id, user_online_service

__all__ = ["SERVER_ID", "UserOnlineService", "new_connection_id", "user_online_service"]
