"""The README's channel-layer settings survive redis-py 8's new defaults.

redis-py 8 made ``socket_timeout`` 5 s (channels_redis 4.3's idle blocking receive then
raises, django/channels_redis#422) and made the asyncio pool raise ``MaxConnectionsError``
past 100 connections. The README's example sets both; these tests run that exact dict
against a real Redis, next to the defaults it replaces, which must fail the same way.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_host(redis_url: str) -> dict[str, Any]:
    """The host dict of the README's CHANNEL_LAYERS, pointed at the test Redis."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "CHANNEL_LAYERS" in b]
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(block), namespace)
    (host,) = namespace["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
    return {**host, "address": redis_url}


def layer(host: dict[str, Any]) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[host], prefix=f"idle-{uuid.uuid4().hex[:8]}")


async def receive_after_idle(channel_layer: RedisChannelLayer, idle: float) -> Any:
    """Receive on a new channel that stays empty for ``idle`` s, then gets one message.

    A receive that breaks while idle (redis-py 8's 5 s socket timeout) raises as soon as it
    breaks, not after the whole ``idle``: the wait ends when the receive does.
    """
    channel = await channel_layer.new_channel()
    receiving = asyncio.ensure_future(channel_layer.receive(channel))
    try:
        await asyncio.wait({receiving}, timeout=idle)
        if receiving.done():  # nothing was sent: the receive broke (it raises here)
            return receiving.result()
        await channel_layer.send(channel, {"type": "hello"})
        return await asyncio.wait_for(receiving, 10)
    finally:
        receiving.cancel()
        await channel_layer.flush()


async def test_readme_settings_survive_an_idle_receive(redis_url: str) -> None:
    # Three of channels_redis's 5 s blocking pops, longer than redis-py 8's default timeout.
    message = await receive_after_idle(layer(readme_host(redis_url)), idle=16)
    assert message == {"type": "hello"}


async def test_redis_py_defaults_break_the_idle_receive(redis_url: str) -> None:
    host = {"address": redis_url}  # what the README replaces
    if redis.VERSION < (8,):
        pytest.fail("This suite documents redis-py 8's defaults; install redis>=8 to run it")
    with pytest.raises(redis.exceptions.TimeoutError):
        await receive_after_idle(layer(host), idle=16)


async def burst_of_group_adds(channel_layer: RedisChannelLayer, count: int) -> None:
    try:
        await asyncio.gather(
            *(channel_layer.group_add(f"burst{i % 7}", f"chan.{i}") for i in range(count))
        )
    finally:
        await channel_layer.flush()


async def test_readme_settings_take_a_burst_of_connects(redis_url: str) -> None:
    await burst_of_group_adds(layer(readme_host(redis_url)), 400)


async def test_redis_py_default_pool_fails_a_burst_of_connects(redis_url: str) -> None:
    with pytest.raises(redis.exceptions.MaxConnectionsError):
        await burst_of_group_adds(layer({"address": redis_url}), 400)
