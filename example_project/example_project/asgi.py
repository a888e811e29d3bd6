"""The example project's ASGI application, served by uvicorn (``manage.py demo``).

HTTP goes to Django (static files included, so that no other server is needed);
WebSockets go through origin validation (which logs the origins it refuses) and JWT
authentication to the package's ``ws/user/`` consumer and the project's own consultation
consumer.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

# Django is set up before anything imports models.
django_asgi_app = get_asgi_application()

from consultations.routing import websocket_urlpatterns as consultation_urlpatterns  # noqa: E402

from django_presence.middleware import JWTAuthMiddlewareStack, OriginValidator  # noqa: E402
from django_presence.routing import presence_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": OriginValidator(
            JWTAuthMiddlewareStack(URLRouter(presence_urlpatterns() + consultation_urlpatterns))
        ),
    }
)
