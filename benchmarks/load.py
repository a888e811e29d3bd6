"""WebSocket clients for the benchmark: open, close and churn sockets against a server.

Every client authenticates the way a browser does with the package's middleware:
``new WebSocket(url, ["access_token", token])``. Every operation has a timeout, and every
loop runs a fixed number of times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

OPEN_TIMEOUT = 60.0
CLOSE_TIMEOUT = 30.0


async def open_socket(url: str, token: str) -> ClientConnection:
    """Open one authenticated socket (no compression, no client pings)."""
    return await connect(
        url,
        subprotocols=[Subprotocol("access_token"), Subprotocol(token)],
        open_timeout=OPEN_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        ping_interval=None,
        compression=None,
        max_queue=None,
    )


@dataclass
class Opened:
    """Sockets opened by :func:`open_many`, the failures, and when the last one opened."""

    sockets: list[ClientConnection] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    done_at: float = 0.0


async def open_many(url: str, tokens: Sequence[str], batch: int) -> Opened:
    """Open one socket per token, ``batch`` at a time (each batch concurrently)."""
    opened = Opened()
    for start in range(0, len(tokens), batch):
        results = await asyncio.gather(
            *(open_socket(url, token) for token in tokens[start : start + batch]),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                opened.failures.append(f"{type(result).__name__}: {result}")
            else:
                opened.sockets.append(result)
    opened.done_at = time.time()
    return opened


async def close_many(sockets: Sequence[ClientConnection], batch: int) -> float:
    """Close ``sockets``, ``batch`` at a time; return when the last close handshake ended."""
    for start in range(0, len(sockets), batch):
        await asyncio.gather(
            *(ws.close() for ws in sockets[start : start + batch]), return_exceptions=True
        )
    return time.time()


@dataclass
class Churned:
    """What :func:`churn` did."""

    cycles: int = 0
    failures: list[str] = field(default_factory=list)
    done_at: float = 0.0


async def churn(url: str, tokens: Sequence[str], in_flight: int) -> Churned:
    """One open-then-close cycle per token, ``in_flight`` cycles at a time."""
    result = Churned()
    queue = list(reversed(tokens))

    async def worker() -> None:
        while queue:
            token = queue.pop()
            try:
                ws = await open_socket(url, token)
                await ws.close()
                result.cycles += 1
            except Exception as e:
                result.failures.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    result.done_at = time.time()
    return result


async def wait_for_marker(ws: ClientConnection, marker: str, timeout: float) -> float:
    """Receive until a frame containing ``marker`` arrives; return when (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError(f"no frame with {marker!r} after {timeout} s")
        message: Any = await asyncio.wait_for(ws.recv(), remaining)
        if marker in (message if isinstance(message, str) else message.decode()):
            return time.perf_counter()
