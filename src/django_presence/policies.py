"""Authorization of what a ``ws/user/`` client may do: message, watch, join, broadcast.

The consumer asks the policy named by ``DJANGO_PRESENCE["POLICY"]`` (a dotted path,
:class:`DefaultPolicy` by default). To change the rules, subclass :class:`DefaultPolicy`
and name your class in the setting::

    # myproject/presence.py
    from django_presence.policies import DefaultPolicy

    class TeamPolicy(DefaultPolicy):
        async def can_message(self, user, target_id):
            return await Membership.objects.filter(
                team__members=user, user_id=target_id
            ).aexists()

    # settings.py
    DJANGO_PRESENCE = {"POLICY": "myproject.presence.TeamPolicy"}

Each method may be a coroutine or a plain function returning a bool. A consumer subclass
may also set :attr:`~django_presence.consumers.UserConsumer.policy_class`, or override the
consumer's own ``can_*`` methods, to decide per endpoint.

``user`` is the connection's authenticated user (``scope["user"]``); ``target_id`` is the
other user's primary key, already converted to the primary key's Python type; ``group``
is a client group name that already passed
:func:`~django_presence.groups.validate_client_group_name`.
"""

from __future__ import annotations

from typing import Any

from .conf import valid_setting


class DefaultPolicy:
    """Authenticated users may message and watch anyone and join any group; staff broadcast.

    The consumer only runs for authenticated users, so the methods need not check that.
    """

    async def can_message(self, user: Any, target_id: Any) -> bool:
        """Whether ``user`` may send a ``direct_message`` to the user ``target_id``."""
        return True

    async def can_watch(self, user: Any, target_id: Any) -> bool:
        """Whether ``user`` may subscribe to the online status of the user ``target_id``."""
        return True

    async def can_join_group(self, user: Any, group: str) -> bool:
        """Whether ``user`` may join the client group ``group`` (and see its members)."""
        return True

    async def can_send_to_group(self, user: Any, group: str) -> bool:
        """Whether ``user``, a member of ``group``, may send a ``group_message`` to it."""
        return True

    async def can_broadcast(self, user: Any) -> bool:
        """Whether ``user`` may send a ``broadcast`` to every connected user: staff only."""
        return bool(getattr(user, "is_staff", False))


def get_policy_class() -> type[Any]:
    """The class ``DJANGO_PRESENCE["POLICY"]`` names (or is), imported on each call.

    ``import_string`` finds an already imported module in ``sys.modules``, so this is
    cheap, and ``override_settings`` switches policies without any cache to reset. A bad
    value raises :class:`~django_presence.exceptions.PresenceImproperlyConfigured`.
    """
    policy_class: type[Any] = valid_setting("POLICY")
    return policy_class
