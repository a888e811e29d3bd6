"""Signals sent on user-level presence transitions.

Both are sent once per transition decided by the backend (0 -> 1 and 1 -> 0 open
connections, after any grace period), never for a second tab and never on a heartbeat,
by the server process that observed the transition, after the ``is_online`` field was
written, with ``sender`` set to :class:`~django_presence.backends.Transition`. Receivers
get ``user_id`` (the user's primary key) and ``seq`` (increases with
every transition; use it to order transitions received from several processes, or from
several threads of one process). Within one event loop, a user's signals arrive in seq
order, and a receiver may call the service for the same user.

Receivers may be sync functions, or on Django 5.0 and newer async ones (Django 4.2's
signals cannot await a receiver). A receiver that raises is logged with its traceback
(``django_presence.transitions``) and does not keep the other receivers from
running, nor presence from being applied.

Example::

    from django.dispatch import receiver
    from django_presence.signals import user_online

    @receiver(user_online)
    def greet(sender, user_id, **kwargs):
        print("user", user_id, "came online")
"""

from __future__ import annotations

from django.dispatch import Signal

#: Sent when a user's first connection is registered.
user_online = Signal()

#: Sent when a user's last connection is removed, expires, or is cleaned up.
user_offline = Signal()
