"""The test project's ASGI application, as a project adopting the package writes it."""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from django.urls import path  # noqa: E402

from django_presence.consumers import UserOnlineStatusMixin  # noqa: E402
from django_presence.middleware import JWTAuthMiddlewareStack  # noqa: E402
from django_presence.routing import websocket_urlpatterns  # noqa: E402


class ChattyConsumer(UserOnlineStatusMixin, AsyncWebsocketConsumer):
    """Sends a burst of frames on connect: sends to a socket that closed meanwhile fail."""

    async def connect(self) -> None:
        await self.accept()
        for i in range(50):
            await self.send(text_data=f"frame {i}")
            await asyncio.sleep(0)


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": JWTAuthMiddlewareStack(
            URLRouter([*websocket_urlpatterns, path("ws/chatty/", ChattyConsumer.as_asgi())])
        ),
    }
)
