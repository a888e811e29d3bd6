"""The benchmark server: the variant's consumer at ``ws/bench/`` and a control API.

The control API is a plain ASGI app (no Django request cycle), used by the harness only
between measurements: ``GET /bench/stats``, ``POST /bench/reset``, ``GET /bench/db-online``,
``POST /bench/broadcast?mode=service|raw``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")

import django

django.setup()

if os.environ.get("BENCH_SERVER_PATCH"):
    # A Python file run before serving, to measure a change to the package without
    # editing it (``run.py --server-patch``); never used by a plain run.
    import runpy

    runpy.run_path(os.environ["BENCH_SERVER_PATCH"], run_name="bench_server_patch")

from channels.db import database_sync_to_async  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.urls import path  # noqa: E402

from django_presence import groups  # noqa: E402

from . import stats  # noqa: E402
from .consumers import auth_for, consumer_for  # noqa: E402


class CountSockets:
    """Counts WebSocket connections in flight: ``finished`` moves once all cleanup is done."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        stats.socket_started()
        failed = True
        try:
            await self.inner(scope, receive, send)
            failed = False
        finally:
            stats.socket_finished(failed)


@database_sync_to_async
def _db_online_count() -> int:
    return get_user_model()._default_manager.filter(is_online=True).count()


async def _broadcast(mode: str, text: str) -> None:
    if mode == "service":
        from django_presence.services.messaging import user_messaging_service

        await user_messaging_service.broadcast_system_message(text)
    else:
        # The same event the service sends, handed to the layer directly.
        await get_channel_layer().group_send(
            groups.broadcast_group(), {"type": "presence.broadcast", "message": text, "extra": {}}
        )


def _task_stack(task: asyncio.Task[Any]) -> str:
    buffer = io.StringIO()
    task.print_stack(file=buffer)
    return buffer.getvalue()


async def control(scope: Any, receive: Any, send: Any) -> None:
    """The harness's control API."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    route = (scope["method"], scope["path"])
    status, body = 200, {}
    if route == ("GET", "/bench/stats"):
        body = {"pid": os.getpid(), "variant": settings.BENCH_VARIANT, **stats.snapshot()}
    elif route == ("POST", "/bench/reset"):
        stats.reset()
    elif route == ("GET", "/bench/tasks"):
        # For debugging a stuck socket: every task of the loop with where it waits.
        body = {"tasks": [_task_stack(task) for task in asyncio.all_tasks()]}
    elif route == ("GET", "/bench/db-online"):
        body = {"count": await _db_online_count()}
    elif route == ("POST", "/bench/broadcast"):
        start = time.perf_counter()
        await _broadcast(query.get("mode", "service"), query.get("text", "hello"))
        body = {"call_seconds": time.perf_counter() - start}
    else:
        status = 404
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


application = ProtocolTypeRouter(
    {
        "http": control,
        "lifespan": control,
        "websocket": CountSockets(
            auth_for(settings.BENCH_VARIANT)(
                URLRouter([path("ws/bench/", consumer_for(settings.BENCH_VARIANT).as_asgi())])
            )
        ),
    }
)
