"""The ASGI application the fault suite serves with uvicorn, as a project would write it.

It also records every ``user_online`` / ``user_offline`` / ``message_undelivered`` signal the
process sends, one JSON line each, in ``FAULTS_EVENTS_FILE``, so that tests can see what the
server processes did.
"""

import json
import os
import time
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from django_presence import signals  # noqa: E402
from django_presence.middleware import JWTAuthMiddlewareStack  # noqa: E402
from django_presence.routing import websocket_urlpatterns  # noqa: E402


def _record(event: str, user_id: Any, seq: int, **more: Any) -> None:
    path = os.environ.get("FAULTS_EVENTS_FILE")
    if not path:
        return
    line = json.dumps(
        {
            "event": event,
            "user_id": user_id,
            "seq": seq,
            "pid": os.getpid(),
            "t": time.time(),
            **more,
        }
    )
    # One write() of a short line to an O_APPEND file is atomic across processes.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record_online(sender: Any, *, user_id: Any, seq: int, **kwargs: Any) -> None:
    """Receiver of ``user_online``: append it to the events file."""
    _record("online", user_id, seq)


def record_offline(sender: Any, *, user_id: Any, seq: int, **kwargs: Any) -> None:
    """Receiver of ``user_offline``: append it to the events file."""
    _record("offline", user_id, seq)


def record_undelivered(
    sender: Any, *, user_id: Any, message: Any, offset: int, epoch: str, **kwargs: Any
) -> None:
    """Receiver of ``message_undelivered``: append it (``seq`` is the offset) to the file."""
    text = None if message is None else message["data"].get("message")
    _record("undelivered", user_id, offset, epoch=epoch, message=text)


signals.user_online.connect(record_online, weak=False)
signals.user_offline.connect(record_offline, weak=False)
signals.message_undelivered.connect(record_undelivered, weak=False)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": JWTAuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
