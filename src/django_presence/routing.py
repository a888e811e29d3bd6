"""URL routing helpers for Channels' ``URLRouter``.

``URLRouter`` does not accept ``include()``, so the package offers lists of ``path()``
entries to splice into a project's own list::

    from channels.routing import ProtocolTypeRouter, URLRouter
    from django_presence.middleware import JWTAuthMiddlewareStack
    from django_presence.routing import websocket_urlpatterns

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": JWTAuthMiddlewareStack(URLRouter(websocket_urlpatterns + my_patterns)),
    })
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path
from django.utils.module_loading import import_string


def presence_urlpatterns(
    prefix: str = "ws/", consumer: Any = None, policy: Any = None
) -> list[URLPattern]:
    """The package's WebSocket routes under ``prefix`` (``"ws/"`` gives ``ws/user/``).

    ``consumer`` replaces :class:`~django_presence.consumers.UserConsumer`, for a project
    that subclasses it. ``policy`` (a policy class or its dotted path) decides what this
    route's clients may do, in place of ``DJANGO_PRESENCE["POLICY"]``:
    ``policy=PresenceOnlyPolicy`` serves live presence with no messaging.
    """
    if (
        not isinstance(prefix, str)
        or prefix.startswith("/")
        or (prefix and not prefix.endswith("/"))
    ):
        raise ValueError(
            f"prefix must be a relative path ending with '/', like 'ws/' or '', got {prefix!r}."
        )
    if consumer is None:
        from .consumers import UserConsumer

        consumer = UserConsumer
    if policy is not None:
        if isinstance(policy, str):
            policy = import_string(policy)
        if not isinstance(policy, type):
            raise TypeError(f"policy must be a policy class or its dotted path, got {policy!r}.")
        consumer = type(consumer.__name__, (consumer,), {"policy_class": policy})
    return [path(f"{prefix}user/", consumer.as_asgi(), name="django_presence_user")]


#: ``[path("ws/user/", UserConsumer.as_asgi())]``.
websocket_urlpatterns = presence_urlpatterns()
