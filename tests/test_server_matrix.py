"""One end-to-end scenario under every supported ASGI server and channels_redis layer.

Each cell starts two real server processes (uvicorn or daphne) of the test project,
sharing one Redis for presence and one channel layer (``RedisChannelLayer`` or
``RedisPubSubChannelLayer``), and drives them with real ``websockets`` clients: Alice on
server 2 watches Bob on server 1. The test process itself is a sync caller (as a view or
a Celery task is) with the same settings. Timings are small so the four cells take
seconds: ``HEARTBEAT_INTERVAL`` 0.5 s, ``CONNECTION_TTL`` 2 s, ``OFFLINE_GRACE_PERIOD``
0.3 s. ``docs/compatibility.md`` states what this file shows, and its CHANNEL_LAYERS
dicts are the ones the servers run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from channels.layers import channel_layers
from django.db import connections
from django.test import override_settings
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from django_presence.backends import reset_backend
from django_presence.services import user_messaging_service, user_online_service

from .servers import AsgiServer
from .tokens import make_token

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
TTL, INTERVAL, GRACE = 2.0, 0.5, 0.3
#: Time for a frame to cross a loaded 2-core machine.
TIMEOUT = 10.0


DOCS = Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"


def documented_layers() -> dict[str, dict[str, Any]]:
    """The CHANNEL_LAYERS["default"] dicts of docs/compatibility.md, by BACKEND."""
    blocks = re.findall(r'```python title="settings.py"\n(.*?)```', DOCS.read_text(), re.S)
    found = {}
    for block in blocks:
        namespace: dict[str, Any] = {}
        exec(textwrap.dedent(block), namespace)
        entry = namespace["CHANNEL_LAYERS"]["default"]
        found[entry["BACKEND"]] = entry
    return found


def layer_config(layer: str, redis_url: str, prefix: str) -> dict[str, Any]:
    """docs/compatibility.md's CHANNEL_LAYERS entry for ``layer``, on the test Redis."""
    entry = documented_layers()[LAYERS[layer]]
    (host,) = entry["CONFIG"]["hosts"]
    config = {**entry["CONFIG"], "hosts": [{**host, "address": redis_url}], "prefix": prefix}
    return {**entry, "CONFIG": config}


# -- the servers' database -----------------------------------------------------------------


@dataclass
class Database:
    """The servers' database, with two users: a SQLite file, or PostgreSQL like the tests'."""

    url: str
    alice: int
    bob: int


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Database]:
    """Migrated once for the module; on PostgreSQL a database of its own, dropped after."""
    test_url = os.environ.get("DATABASE_URL", "")
    name = ""
    if test_url.startswith(("postgres://", "postgresql://")):
        import psycopg

        name = f"presence_matrix_{uuid.uuid4().hex[:10]}"
        admin_url = test_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        url = test_url.rsplit("/", 1)[0] + "/" + name
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'db.sqlite3'}"
    setup = AsgiServer(database_url=url, redis_url=redis_url, key_prefix="unused")
    try:
        out = setup.manage(
            "shell",
            "-c",
            "from django.core.management import call_command; import json; "
            "call_command('migrate', verbosity=0); "
            "from django.contrib.auth import get_user_model; U = get_user_model(); "
            "print(json.dumps([U.objects.create_user(n).pk for n in ('alice', 'bob')]))",
        )
        alice, bob = json.loads(out.strip().splitlines()[-1])
        yield Database(url, alice, bob)
    finally:
        if name:
            import psycopg

            with psycopg.connect(admin_url, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- one cell's processes and settings -----------------------------------------------------


@dataclass
class Cell:
    """Two servers of one kind on one layer, and the test process configured alike."""

    kind: str
    server1: AsgiServer
    server2: AsgiServer
    db: Database
    redis_url: str

    def online(self) -> set[str]:
        """The users the presence backend holds online, read straight from Redis."""
        with redis.Redis.from_url(self.redis_url, decode_responses=True) as client:
            return set(client.hkeys("{" + self.server1.prefix + "}:online"))


@pytest.fixture(params=["uvicorn", "daphne"])
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(LAYERS))
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cell(server_kind: str, layer: str, database: Database, redis_url: str) -> Iterator[Cell]:
    key_prefix = f"mx-{uuid.uuid4().hex[:10]}"
    layer_prefix = f"mxl-{uuid.uuid4().hex[:10]}"
    layers = {"default": layer_config(layer, redis_url, layer_prefix)}
    presence = {
        "CONNECTION_TTL": TTL,
        "HEARTBEAT_INTERVAL": INTERVAL,
        "OFFLINE_GRACE_PERIOD": GRACE,
    }
    servers = [
        AsgiServer(
            database_url=database.url,
            redis_url=redis_url,
            key_prefix=key_prefix,
            server=server_kind,
            channel_layers=layers,
            presence=presence,
        )
        for _ in range(2)
    ]
    test_process = {
        "BACKEND": "django_presence.backends.redis.RedisBackend",
        "REDIS_URL": redis_url,
        "KEY_PREFIX": key_prefix,
        **presence,
    }
    try:
        for server in servers:
            server.start()
        with override_settings(CHANNEL_LAYERS=layers, DJANGO_PRESENCE=test_process):
            yield Cell(server_kind, servers[0], servers[1], database, redis_url)
    finally:
        for server in servers:
            server.stop()
        channel_layers.backends.clear()
        reset_backend()
        with redis.Redis.from_url(redis_url) as client:
            for pattern in ("{" + key_prefix + "}:*", layer_prefix + "*"):
                keys = list(client.scan_iter(match=pattern))
                if keys:
                    client.delete(*keys)


# -- clients -------------------------------------------------------------------------------


class Client:
    """A ``ws/user/`` connection of one user, speaking the wire protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def request(self, type: str, data: dict[str, Any] | None = None, id: Any = None) -> None:
        frame: dict[str, Any] = {"type": type, "data": data or {}}
        if id is not None:
            frame["id"] = id
        await self.ws.send(json.dumps(frame))

    async def next(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        return frame

    async def expect(self, type: str) -> dict[str, Any]:
        """The next frame, which must be of ``type``."""
        frame = await self.next()
        assert frame["type"] == type, frame
        return frame

    async def expect_all(self, *types: str) -> dict[str, dict[str, Any]]:
        """The next frames, one of each type in any order (they come from different senders)."""
        frames = [await self.next() for _ in types]
        assert sorted(f["type"] for f in frames) == sorted(types), frames
        return {f["type"]: f for f in frames}

    async def closed_with(self) -> int | None:
        """Wait for the server to close the socket; its close code, None without a frame."""
        with pytest.raises(ConnectionClosed) as excinfo:
            await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        return None if excinfo.value.rcvd is None else excinfo.value.rcvd.code


async def connect(server: AsgiServer, user_id: int, **token: Any) -> Client:
    """Connect as a browser does: the token in the ``access_token`` subprotocol."""
    ws = await ws_connect(
        f"{server.url}/ws/user/",
        subprotocols=["access_token", make_token(user_id, **token)],  # type: ignore[list-item]
        open_timeout=TIMEOUT,
    )
    # The server picks "access_token" and never echoes the token back.
    assert ws.subprotocol == "access_token"
    return Client(ws)


async def refused_status(server: AsgiServer, token: str) -> int:
    """The HTTP status of a handshake refused for its token."""
    with pytest.raises(InvalidStatus) as excinfo:
        async with ws_connect(
            f"{server.url}/ws/user/",
            subprotocols=["access_token", token],  # type: ignore[list-item]
            open_timeout=TIMEOUT,
        ):
            pass
    return excinfo.value.response.status_code


async def sync_call(function: Callable[..., Any], *args: Any) -> Any:
    """Call a sync API from a plain thread (as a view or a Celery task does)."""

    def call() -> Any:
        try:
            return function(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


async def status_change(client: Client, user_id: int, online: bool) -> dict[str, Any]:
    frame = await client.expect("status_changed")
    assert (frame["data"]["user_id"], frame["data"]["is_online"]) == (user_id, online), frame
    return dict(frame["data"])


# -- the scenario --------------------------------------------------------------------------


async def test_the_whole_protocol_on_every_server_and_layer(cell: Cell) -> None:
    alice_id, bob_id = cell.db.alice, cell.db.bob
    s1, s2 = cell.server1, cell.server2

    # Both users connect (on different servers); Alice watches Bob.
    alice = await connect(s2, alice_id)
    bob = await connect(s1, bob_id)
    assert cell.online() == {str(alice_id), str(bob_id)}
    await alice.request("subscribe_presence", {"user_ids": [bob_id]})
    assert (await alice.expect("presence_state"))["data"]["users"] == {str(bob_id): True}

    # A direct message crosses servers.
    await alice.request("direct_message", {"target_user_id": bob_id, "message": "hi bob"}, 1)
    assert (await alice.expect("ack"))["id"] == 1
    frame = await bob.expect("direct_message")
    assert (frame["data"]["from_user_id"], frame["data"]["message"]) == (alice_id, "hi bob")

    # A sync caller (the test process) broadcasts to everyone on every server.
    await sync_call(user_messaging_service.broadcast_system_message_sync, "maintenance")
    for client in (alice, bob):
        assert (await client.expect("system_broadcast"))["data"]["message"] == "maintenance"

    # A client group spans the servers.
    await alice.request("join_group", {"group": "ops"})
    assert (await alice.expect("group_joined"))["data"]["members_online"] == [alice_id]
    await bob.request("join_group", {"group": "ops"})
    joined = (await bob.expect("group_joined"))["data"]
    assert sorted(joined["members_online"]) == sorted([alice_id, bob_id])
    await bob.request("group_message", {"group": "ops", "message": "deploying"})
    frames = await alice.expect_all("group_presence", "group_message")
    assert frames["group_presence"]["data"]["user_id"] == bob_id
    assert frames["group_message"]["data"] == {
        "group": "ops",
        "from_user_id": bob_id,
        "message": "deploying",
    }
    assert (await bob.expect("group_message"))["data"]["message"] == "deploying"

    # A malformed frame gets an error frame, and the socket stays open.
    await alice.ws.send("{not json")
    assert (await alice.expect("error"))["data"]["code"] == "invalid_json"
    await alice.request("ping", id="still-open")
    assert (await alice.expect("pong"))["id"] == "still-open"

    # Bad and expired tokens are refused at the handshake: HTTP 403 on both servers.
    assert await refused_status(s1, "not-a-token") == 403
    assert await refused_status(s1, make_token(bob_id, lifetime=-60)) == 403

    # Bob closes: he leaves the group at once, and Alice sees him offline once the grace
    # period is over.
    closed_at = time.monotonic()
    await bob.ws.close()
    frame = await alice.expect("group_presence")
    assert (frame["data"]["user_id"], frame["data"]["joined"]) == (bob_id, False)
    offline = await status_change(alice, bob_id, False)
    assert time.monotonic() - closed_at >= GRACE
    assert datetime.fromisoformat(offline["last_seen"]).tzinfo is not None

    # disconnect_user (logout, password change) closes his socket on its server with 4010.
    bob = await connect(s1, bob_id)
    await status_change(alice, bob_id, True)
    await sync_call(user_online_service.disconnect_user, bob_id)
    assert await bob.closed_with() == 4010
    await status_change(alice, bob_id, False)

    # His server crashes: the survivor's sweep takes him offline within TTL + interval.
    bob = await connect(s1, bob_id)
    await status_change(alice, bob_id, True)
    killed_at = time.monotonic()
    s1.kill()
    await status_change(alice, bob_id, False)
    took = time.monotonic() - killed_at
    assert took <= TTL + INTERVAL + 1.0, took  # one second of slack for a loaded machine
    assert cell.online() == {str(alice_id)}
    await bob.ws.close()

    # A graceful stop (SIGTERM, as in a deploy) of Alice's server. uvicorn closes her socket
    # with 1012 and the consumer removes her connection with the grace period. daphne drops
    # the socket without a close frame, and whether the consumer's cleanup runs is a race
    # (daphne 4.2's shutdown hook can fail with KeyError before cancelling any
    # application): her lease then stays until it expires, as after a crash. See
    # docs/compatibility.md.
    stopped_at = time.monotonic()
    s2.stop()  # returns once the server process has exited
    exited_at = time.monotonic()
    code = await alice.closed_with()
    if cell.kind == "uvicorn":
        assert code == 1012
        # Her consumer removed the connection before the server exited: no connection is
        # left, only the grace period (after a crash the lease would still be there).
        assert await sync_call(user_online_service.get_user_connection_count, alice_id) == 0
        # The grace period ran out at most GRACE after the removal, hence after the exit.
        await asyncio.sleep(max(0.0, GRACE + 0.1 - (time.monotonic() - exited_at)))
        await sync_call(user_online_service.sweep)  # no server is left to sweep
        assert not await sync_call(user_online_service.is_user_online, alice_id)
    else:
        assert code is None
        while await sync_call(user_online_service.is_user_online, alice_id):
            assert time.monotonic() - stopped_at <= TTL + 1.0
            await asyncio.sleep(0.2)
            await sync_call(user_online_service.sweep)


def test_the_documented_layers_are_the_tested_ones() -> None:
    """docs/compatibility.md documents exactly the layers the matrix runs, as it runs them."""
    layers = documented_layers()
    assert sorted(layers) == sorted(LAYERS.values())
    for entry in layers.values():
        (host,) = entry["CONFIG"]["hosts"]
        assert host["socket_timeout"] >= 30
        assert host["max_connections"] >= 1000


# -- availability across servers -------------------------------------------------------------


@pytest.mark.parametrize("server_kind", ["uvicorn"])
@pytest.mark.parametrize("layer", list(LAYERS))
async def test_a_status_set_on_one_server_reaches_a_watcher_on_the_other_once(
    cell: Cell,
) -> None:
    """set_status through server 1: one status_changed on server 2, and his other tab told."""
    alice_id, bob_id = cell.db.alice, cell.db.bob
    s1, s2 = cell.server1, cell.server2
    bob = await connect(s1, bob_id)
    bob_elsewhere = await connect(s2, bob_id)
    alice = await connect(s2, alice_id)
    await alice.request("subscribe_presence", {"user_ids": [bob_id]})
    state = (await alice.expect("presence_state"))["data"]
    assert state["states"][str(bob_id)]["state"] == "online"

    await bob.request("set_status", {"status": "busy", "text": "Ward round"}, id=1)
    reply = await bob.expect("status")
    assert (reply["id"], reply["data"]["status"]) == (1, "busy")
    assert (await bob_elsewhere.expect("status"))["data"] == {
        "status": "busy",
        "text": "Ward round",
        "expires_in": None,
    }
    frame = (await alice.expect("status_changed"))["data"]
    assert (frame["user_id"], frame["state"], frame["is_online"]) == (bob_id, "busy", True)
    assert frame["status_text"] == "Ward round"
    # Exactly once: the next thing alice hears is the answer to her ping.
    await alice.request("ping", id="after")
    assert (await alice.expect("pong"))["id"] == "after"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(alice.ws.recv(), 1.0)

    # Invisible through server 2: alice sees him offline, once; his tabs still get messages.
    await bob_elsewhere.request("set_status", {"status": "invisible"})
    await bob_elsewhere.expect("status")
    assert (await bob.expect("status"))["data"]["status"] == "invisible"
    frame = (await alice.expect("status_changed"))["data"]
    assert (frame["state"], frame["is_online"]) == ("offline", False)
    await alice.request("direct_message", {"target_user_id": bob_id, "message": "there?"})
    for tab in (bob, bob_elsewhere):
        assert (await tab.expect("direct_message"))["data"]["message"] == "there?"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(alice.ws.recv(), 1.0)
    for client in (alice, bob, bob_elsewhere):
        await client.ws.close()
