"""Authorization of what a ``ws/user/`` client may do: message, watch, join, broadcast.

The consumer asks the policy named by ``DJANGO_PRESENCE["POLICY"]`` (a dotted path,
:class:`DefaultPolicy` by default). The default is private: a user may watch and message
only the users the project relates them to, and nobody else, and may join no client
group, until the project says otherwise. Say who relates to whom with one method::

    # myproject/presence.py
    from django_presence.policies import DefaultPolicy

    class CarePolicy(DefaultPolicy):
        async def are_related(self, user, target_id):
            return await Consultation.objects.filter(
                Q(doctor=user, patient_id=target_id) | Q(patient=user, doctor_id=target_id)
            ).aexists()

        async def can_join_group(self, user, group):
            return group == f"ward-{user.ward_id}"

    # settings.py
    DJANGO_PRESENCE = {"POLICY": "myproject.presence.CarePolicy"}

:class:`OpenPolicy` lets any authenticated user watch and message anyone and join any
group: one line for a demo or an internal tool (``"POLICY":
"django_presence.policies.OpenPolicy"``). The system check ``django_presence.W005`` warns
when it is used with ``DEBUG = False``.

:class:`PresenceOnlyPolicy` serves live presence and nothing else: any authenticated user
may watch anyone (narrow it with :meth:`~DefaultPolicy.are_related`), and nobody may send
a direct message, a broadcast or a group message, or join a client group. It is the policy
of a site that shows who is online next to names and has no use for the messaging
(``"POLICY": "django_presence.policies.PresenceOnlyPolicy"``, or
``presence_urlpatterns(policy=PresenceOnlyPolicy)`` for one route).

Each method may be a coroutine or a plain function returning a bool. A consumer subclass
may also set :attr:`~django_presence.consumers.UserConsumer.policy_class`, or override the
consumer's own ``can_*`` methods, to decide per endpoint.

``user`` is the connection's authenticated user (``scope["user"]``); ``target_id`` is the
other user's primary key, already converted to the primary key's Python type; ``group``
is a client group name that already passed
:func:`~django_presence.groups.validate_client_group_name`.
"""

from __future__ import annotations

import inspect
from typing import Any

from .conf import valid_setting


class DefaultPolicy:
    """Private by default: users reach only the users the project relates them to.

    :meth:`are_related` decides whom a user may watch and message; by default a user is
    related to nobody but themselves, so no one learns anything of anyone else (not even
    whether a user id exists: ``direct_message`` to an unrelated id is ``forbidden``, as
    to an id that does not exist). Client groups are closed (:meth:`can_join_group` is
    False) until the project opens them. Staff may broadcast. The consumer only runs for
    authenticated users, so the methods need not check that.
    """

    async def are_related(self, user: Any, target_id: Any) -> bool:
        """Whether ``user`` may see ``target_id``'s presence and message them: self only.

        Override this one method to open watching and messaging to the users your project
        relates (a doctor and their patients, the members of a team).
        """
        return bool(target_id == user.pk)

    async def can_message(self, user: Any, target_id: Any) -> bool:
        """Whether ``user`` may send a ``direct_message`` to the user ``target_id``."""
        return await self.are_related(user, target_id)

    async def can_watch(self, user: Any, target_id: Any) -> bool:
        """Whether ``user`` may subscribe to the online status (and last seen) of ``target_id``."""
        return await self.are_related(user, target_id)

    async def can_see_details(self, user: Any, target_id: Any) -> bool:
        """Whether ``user``, who may watch ``target_id``, also sees their details.

        Details are the devices, activities (``in_call``...), status text and
        ``last_active`` of a user; everyone who may watch sees the state (``online``,
        ``away``, ``busy``, ``offline``). By default only staff and the user themselves
        see details: on a care platform a patient may learn that the doctor is busy, not
        what they are doing. Override to open them (say, to a doctor's patients).
        """
        return bool(target_id == user.pk or getattr(user, "is_staff", False))

    async def can_join_group(self, user: Any, group: str) -> bool:
        """Whether ``user`` may join the client group ``group`` (and see its members): no."""
        return False

    async def can_send_to_group(self, user: Any, group: str) -> bool:
        """Whether ``user``, a member of ``group``, may send a ``group_message`` to it."""
        return True

    async def can_broadcast(self, user: Any) -> bool:
        """Whether ``user`` may send a ``broadcast`` to every connected user: staff only."""
        return bool(getattr(user, "is_staff", False))


class OpenPolicy(DefaultPolicy):
    """Any authenticated user may watch and message anyone and join any group.

    For demos and internal tools where every user may know about every other; the system
    check ``django_presence.W005`` warns when it is used with ``DEBUG = False``. Staff
    still alone may broadcast.
    """

    async def are_related(self, user: Any, target_id: Any) -> bool:
        """Everyone is related to everyone."""
        return True

    async def can_see_details(self, user: Any, target_id: Any) -> bool:
        """Everyone sees everyone's devices, activities and status text."""
        return True

    async def can_join_group(self, user: Any, group: str) -> bool:
        """Any group may be joined."""
        return True


class PresenceOnlyPolicy(DefaultPolicy):
    """Live presence only: watching is open, messages, broadcasts and groups are closed.

    Any authenticated user may subscribe to anyone's online status and ``last_seen``
    (override :meth:`are_related` to narrow who sees whom); ``direct_message``,
    ``broadcast``, ``join_group`` and ``group_message`` are ``forbidden`` for everyone,
    staff included. For pages that show who is online and have no use for the messaging.
    """

    async def are_related(self, user: Any, target_id: Any) -> bool:
        """Everyone may see everyone's presence."""
        return True

    async def can_message(self, user: Any, target_id: Any) -> bool:
        """No direct messages."""
        return False

    async def can_join_group(self, user: Any, group: str) -> bool:
        """No client groups."""
        return False

    async def can_send_to_group(self, user: Any, group: str) -> bool:
        """No group messages (no one can be a member anyway)."""
        return False

    async def can_broadcast(self, user: Any) -> bool:
        """No broadcasts, staff included."""
        return False


async def ask(policy: Any, method: str, user: Any, *args: Any) -> bool:
    """``policy.<method>(user, *args)`` as a bool, awaited when it is a coroutine."""
    result = getattr(policy, method)(user, *args)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def get_policy_class() -> type[Any]:
    """The class ``DJANGO_PRESENCE["POLICY"]`` names (or is), imported on each call.

    ``import_string`` finds an already imported module in ``sys.modules``, so this is
    cheap, and ``override_settings`` switches policies without any cache to reset. A bad
    value raises :class:`~django_presence.exceptions.PresenceImproperlyConfigured`.
    """
    policy_class: type[Any] = valid_setting("POLICY")
    return policy_class
