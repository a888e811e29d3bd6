"""Signals sent on user-level presence transitions and state changes, for messages
nobody received, and when a client group becomes occupied or empties.

Both are sent once per transition decided by the backend (0 -> 1 and 1 -> 0 open
connections, after any grace period), never for a second tab and never on a heartbeat,
by the server process that observed the transition, after the ``is_online`` field was
written, with ``sender`` set to :class:`~django_presence.backends.Transition`. Receivers
get ``user_id`` (the user's primary key) and ``seq`` (increases with
every transition; use it to order transitions received from several processes, or from
several threads of one process). Within one event loop, a user's signals arrive in seq
order, and a receiver may call the service for the same user. Receivers for different
users of one batch of transitions run concurrently when all the signal's receivers are
async, so a slow receiver holds up its batch once, not once per transition; sync
receivers run one after the other, in Django's thread for sync code.

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

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.dispatch import Signal

logger = logging.getLogger("django_presence.transitions")

#: Sent when a user's first connection is registered.
user_online = Signal()

#: Sent when a user's last connection is removed, expires, or is cleaned up.
user_offline = Signal()

#: Sent when what other users see of a user changed: their state (``offline``,
#: ``online``, ``away``, ``busy``; see docs/presence-states.md), devices, activities or
#: status text. Once per change decided by the backend, by the process that observed it,
#: in seq order for a user within one event loop, and together with ``user_online`` /
#: ``user_offline`` when the change is a transition (same ``seq``). Not sent for an
#: invisible user, whom others see offline. ``sender`` is
#: :class:`~django_presence.backends.PublicPresence`; receivers get ``user_id`` (primary
#: key), ``state``, ``devices``, ``activities`` (tuples of strings), ``status_text`` and
#: ``seq``.
presence_changed = Signal()

#: Sent once (by one server process) for each stored message to a user that no client of
#: theirs acknowledged within ``UNDELIVERED_AFTER`` seconds, whether they were offline when
#: it was sent or dropped before seeing it: the hook for an e-mail or push fallback.
#: ``sender`` is :class:`~django_presence.backends.Undelivered`; receivers get
#: ``user_id`` (primary key), ``message`` (the frame the client would have received:
#: ``{"type", "data", "stream", "offset", "epoch"}``, or None when the history no longer
#: held it), ``offset``, ``epoch`` and ``sent_at`` (an aware datetime). See
#: docs/delivery.md for a Celery example.
message_undelivered = Signal()

#: Sent once (by one server process) when a client group that had nobody in it gets its
#: first user, unless the group had emptied less than ``OFFLINE_GRACE_PERIOD`` before
#: (its emptying was never announced, so it is still occupied). ``sender`` is
#: :class:`~django_presence.backends.MemberChange`; receivers get ``group`` (the client
#: group's name). See "Occupancy" in docs/messaging.md.
group_occupied = Signal()

#: Sent once (by one server process) when a client group announced by
#: ``group_occupied`` has had nobody in it for ``OFFLINE_GRACE_PERIOD`` seconds (its
#: last user left, or their membership expired with their server). ``sender`` is
#: :class:`~django_presence.backends.MemberChange`; receivers get ``group``.
group_emptied = Signal()


async def send_robustly(
    signal: Signal, name: str, *, sender: Any, log_extra: dict[str, Any], **kwargs: Any
) -> None:
    """Send ``signal`` so that a receiver that raises is logged and the others still run.

    Async receivers are awaited on Django 5.0 and newer; on Django 4.2 the signal is sent
    from a thread. ``name`` and ``log_extra`` go into the log record of a failure.
    """
    if not signal.receivers:
        return  # nobody listens (presence_changed, often): no dispatch at all
    if not hasattr(signal, "asend_robust"):  # Django 4.2
        responses = await sync_to_async(signal.send_robust)(sender=sender, **kwargs)
    elif (receiver := _sole_async_receiver(signal, sender)) is not None:
        responses = [(receiver, await _call_robustly(receiver, signal, sender, kwargs))]
    else:
        responses = await signal.asend_robust(sender=sender, **kwargs)
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error(
                "The %s receiver %s.%s failed for %s",
                name,
                getattr(receiver, "__module__", "?"),
                getattr(receiver, "__qualname__", repr(receiver)),
                f"group {kwargs['group']!r}"
                if "group" in kwargs
                else f"user {kwargs.get('user_id')}",
                exc_info=response,
                extra=log_extra,
            )


def receiver_kind(signal: Signal, sender: Any) -> str:
    """``"none"``, ``"async"`` or ``"sync"``: what ``signal``'s receivers for ``sender`` are.

    ``"sync"`` when any of them is sync (and on Django 4.2, which runs them all in a
    thread). Sending a signal for several users at once saves time only when its receivers
    are async: sync receivers all run in Django's one thread for sync code, one after the
    other, and handing it several at a time only makes the event loop and that thread
    contend.
    """
    if not signal.receivers:
        return "none"
    split = _split_receivers(signal, sender)
    if split is None or split[0]:
        return "sync"
    return "async" if split[1] else "none"


def _split_receivers(signal: Signal, sender: Any) -> tuple[list[Any], list[Any]] | None:
    """``signal``'s live receivers for ``sender`` as ``(sync, async)`` lists.

    None on Django 4.2 (no async receivers) or when Django's private ``_live_receivers``
    is not the ``(sync, async)`` pair of Django 5.0 to 6.1: callers then take the path
    that does not need the split.
    """
    if not hasattr(signal, "asend_robust"):
        return None
    try:
        sync_receivers, async_receivers = signal._live_receivers(sender)
    except Exception:
        return None
    return list(sync_receivers), list(async_receivers)


def _sole_async_receiver(signal: Signal, sender: Any) -> Any:
    """The signal's receiver for ``sender`` when it is its only one and async, else None.

    ``asend_robust`` runs async receivers in tasks of their own and a sync-receiver
    coroutine beside them (three tasks and two gathers for one receiver, about 45 us per
    signal); the common case of a single async receiver is awaited directly instead,
    which is what ``asend_robust`` amounts to then, with the receiver in the sender's
    context (as Django 6.1 shares it). Anything else (sync receivers, several, a Django
    whose private ``_live_receivers`` looks different) goes through ``asend_robust``.
    """
    split = _split_receivers(signal, sender)
    if split is None or split[0] or len(split[1]) != 1:
        return None
    return split[1][0]


async def _call_robustly(
    receiver: Any, signal: Signal, sender: Any, kwargs: dict[str, Any]
) -> Any:
    """Await ``receiver``; return what it returned or the exception it raised."""
    try:
        return await receiver(signal=signal, sender=sender, **kwargs)
    except Exception as err:
        return err
