"""A consumer's channel-layer groups, kept through a layer outage.

:class:`LayerGroupsMixin` remembers every channel-layer group its connection joined, so
that it can leave them all when the socket closes and join them all again when the layer
lost them (a layer on a Redis that restarted empty). Channels sets ``channel_receive``
to the layer's receive, which raises while Redis is down and would end the consumer;
the mixin retries it with backoff instead, and once the layer answers again joins the
connection's groups again. An outage logs one WARNING per process (see
:class:`~django_presence.runtime.LayerOutage`), not one per socket.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .. import metrics
from ..runtime import get_runtime

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0
#: Seconds a cancelled channel-layer receive gets to finish before it is abandoned. A
#: receive that can cancel does so within a turn or two of the event loop; one that does
#: not (channels_redis's, while it reconnects) is left behind after this, and Channels
#: waits this long whenever such a consumer stops (a second held up a burst of closes).
CANCEL_GRACE = 0.1


def bounded_cancellation(receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """``receive`` made to give up within :data:`CANCEL_GRACE` seconds once cancelled.

    Channels cancels a consumer's pending channel-layer receive when the consumer stops,
    and waits for it. channels_redis 4.3's receive does not always finish cancelling
    (about one consumer in ten, when a server shuts down with clients that do not answer
    its close): the consumer never returns, and the ASGI server waits for it forever, so
    SIGTERM never ends the process. Here the layer's receive runs in a task of its own,
    awaited through a :class:`BoundedReceive`; once cancelled, the receive gets
    ``CANCEL_GRACE`` seconds to finish, then it is left behind and the consumer ends all
    the same (the message such a receive might still take was for this consumer, which
    is closing).

    Each call returns a future, not a coroutine: Channels awaits it as it is, so a
    receive costs one task (the layer's, as without the mixin) and this future, where a
    coroutine shielding the task cost a second task and a shield on every receive, kept
    alive as long as the socket is idle (about twenty objects per connection for the
    garbage collector to walk).
    """

    def receive_once() -> BoundedReceive:
        return BoundedReceive(asyncio.ensure_future(receive()))

    return receive_once


#: Per thread, the context the relay callbacks run in: they read no context variable,
#: and passing one spares a copy of the caller's context per receive. One per thread,
#: because a context cannot be entered in two threads at once (event loops in two
#: threads would otherwise fail each other's callbacks).
_empty_contexts = threading.local()


def _no_context() -> contextvars.Context:
    try:
        return _empty_contexts.context  # type: ignore[no-any-return]
    except AttributeError:
        context = _empty_contexts.context = contextvars.Context()
        return context


class BoundedReceive(asyncio.Future[Any]):
    """The outcome of one channel-layer receive, whose cancellation takes at most
    :data:`CANCEL_GRACE` seconds (see :func:`bounded_cancellation`).

    It takes the receive task's result or exception when the task ends. ``cancel()``
    cancels the task and returns at once; this future is cancelled when the task has
    ended, or :data:`CANCEL_GRACE` seconds later if it has not (the task is then left
    behind, and its outcome retrieved whenever it ends).
    """

    __slots__ = ("_grace", "_receive")

    def __init__(self, receive: asyncio.Future[Any]) -> None:
        super().__init__(loop=receive.get_loop())
        self._receive = receive
        self._grace: asyncio.TimerHandle | None = None
        receive.add_done_callback(self._relay, context=_no_context())

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the receive; this future is cancelled once it ended, or after the grace."""
        if self.done():
            return False
        if self._grace is None:
            if not self._receive.cancel(msg):
                # The receive has ended and its outcome is on its way: cancelled all the
                # same, as a consumer that is stopping takes nothing more.
                return super().cancel(msg)
            self._grace = self.get_loop().call_later(
                CANCEL_GRACE, self._give_up, context=_no_context()
            )
        return True

    def _relay(self, receive: asyncio.Future[Any]) -> None:
        outcome = None if receive.cancelled() else receive.exception()
        if self.done():
            return  # given up on: the outcome is retrieved above and dropped
        if self._grace is not None:
            self._grace.cancel()
            super().cancel()
        elif receive.cancelled():
            super().cancel()
        elif outcome is not None:
            self.set_exception(outcome)
        else:
            self.set_result(receive.result())

    def _give_up(self) -> None:
        if not self.done():
            logger.debug("Left a channel-layer receive that did not finish cancelling")
            super().cancel()


class LayerGroupsMixin:
    """Channel-layer groups of a consumer, joined again after a layer outage.

    For :class:`~django_presence.consumers.UserConsumer`; expects Channels' consumer
    attributes (``channel_layer``, ``channel_name``) and ``get_presence_log_extra()``.
    """

    channel_layer: Any
    channel_name: str
    get_presence_log_extra: Callable[[], dict[str, Any]]  # from UserOnlineStatusMixin

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._layer_groups: set[str] = set()
        self._rejoin_task: asyncio.Task[bool] | None = None
        self._groups_left = False

    @property
    def channel_receive(self) -> Any:
        """The channel-layer receive of this consumer, made to survive a layer outage."""
        return self._channel_receive

    @channel_receive.setter
    def channel_receive(self, layer_receive: Any) -> None:
        receive = bounded_cancellation(layer_receive)

        async def resilient() -> Any:
            delay = 0.1
            while True:
                try:
                    return await receive()
                except Exception as e:
                    # Whatever the layer raises (ConnectionError, TimeoutError, its own
                    # errors): the consumer must outlive it, so retry with backoff.
                    metrics.increment("channel_layer_failures")
                    first = self._layer_outage_began()
                    logger.log(
                        logging.WARNING if first else logging.DEBUG,
                        "Channel layer unavailable (%s); retrying in %.1f s",
                        e,
                        delay,
                        extra=self.get_presence_log_extra(),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)

        self._channel_receive = resilient

    async def join_layer_group(self, group: str) -> None:
        """Join the channel-layer group ``group``, remembering it."""
        if self.channel_layer is None:
            raise RuntimeError(
                "The ws/user/ consumer needs a channel layer: configure CHANNEL_LAYERS and "
                "DJANGO_PRESENCE['CHANNEL_LAYER']."
            )
        self._layer_groups.add(group)
        await self.channel_layer.group_add(group, self.channel_name)

    async def leave_layer_group(self, group: str) -> None:
        """Leave the channel-layer group ``group``."""
        self._layer_groups.discard(group)
        if self.channel_layer is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def presence_rejoin_groups(self) -> None:
        """Join this connection's channel-layer groups again (the layer lost them)."""
        for group in list(self._layer_groups):
            await self.channel_layer.group_add(group, self.channel_name)

    async def leave_layer_groups(self) -> None:
        """Leave every group (the socket is closing); stop retrying to rejoin them."""
        self._groups_left = True
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
        if self.channel_layer is not None:
            for group in self._layer_groups:
                try:
                    await self.channel_layer.group_discard(group, self.channel_name)
                except Exception as e:
                    # The layer is unreachable: the memberships left expire after the
                    # layer's group_expiry. During an outage (already logged once per
                    # process) this is DEBUG, so that sockets closing then do not log one
                    # error per group each.
                    outage = get_runtime().layer_outage.failing > 0
                    logger.log(
                        logging.DEBUG if outage else logging.WARNING,
                        "Could not leave %d channel-layer groups (%s); they expire after "
                        "the layer's group_expiry",
                        len(self._layer_groups),
                        e,
                        exc_info=not outage,
                        extra=self.get_presence_log_extra(),
                    )
                    break  # the layer is unreachable: do not try every other group
        self._layer_groups.clear()

    def _layer_outage_began(self) -> bool:
        """Note that this connection's layer receive failed; True if the process's first."""
        if self._rejoin_task is not None or self._groups_left:
            return False
        task = asyncio.get_running_loop().create_task(self._rejoin_when_back())
        self._rejoin_task = task
        # A callback, not a finally in the task: it runs even if the task is cancelled
        # before it started, so the process's count of failing connections never leaks.
        task.add_done_callback(self._rejoin_done)
        return get_runtime().layer_outage.begin()

    def _rejoin_done(self, task: asyncio.Task[bool]) -> None:
        self._rejoin_task = None
        get_runtime().layer_outage.end(
            recovered=not task.cancelled() and task.exception() is None and task.result()
        )

    async def _rejoin_when_back(self) -> bool:
        """Join this connection's groups again, with backoff, once the layer answers.

        The layer's Redis may have restarted empty, and with it the connection's group
        memberships (its user's group, watched users, rooms); joining again is harmless
        when they were kept. A layer that shares the presence backend's Redis is also
        rejoined by the runtime; a layer on a Redis of its own, only here. The first
        ``group_add`` that succeeds ends the outage for this connection: returns True.
        """
        delay = 0.2
        while not self._groups_left:
            await asyncio.sleep(delay)
            try:
                await self.presence_rejoin_groups()
            except Exception as e:
                # Still unreachable (whatever the layer raises): try again later.
                logger.debug(
                    "Channel layer still unavailable (%s)",
                    e,
                    extra=self.get_presence_log_extra(),
                )
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            return True
        return False
