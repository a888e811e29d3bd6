"""Redis Cluster and Redis Sentinel deployments started by the tests, and client factories.

The Redis backend takes ``BACKEND_OPTIONS={"client_factory": f}`` where ``f(url, **options)``
returns a ``redis.asyncio`` client; ``options`` are the backend's ``socket_timeout``,
``socket_connect_timeout``, ``max_connections`` and ``pool_timeout``. The factories below are
what a project on Cluster or Sentinel writes (``docs/reliability.md`` shows them).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from typing import Any
from urllib.parse import urlparse

import redis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel

from ..servers import RedisProcess, free_port, redis_server_binary, wait_for_port


class PresenceRedisCluster(RedisCluster):
    """``RedisCluster`` whose ``aclose`` takes the ``close_connection_pool`` keyword.

    The backend closes its clients with ``aclose(close_connection_pool=True)``, which
    ``redis.asyncio.Redis`` accepts and ``RedisCluster`` does not (TypeError). Reported with
    the fix for ``backends/redis.py`` in docs/reliability.md; this shim keeps it out of the
    contract results until then.
    """

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close every node's connections (a cluster client owns all its pools)."""
        await super().aclose()


def cluster_client(
    url: str,
    *,
    socket_timeout: float,
    socket_connect_timeout: float,
    max_connections: int,
    pool_timeout: float,
) -> Any:
    """A ``RedisCluster`` client from any node's URL.

    ``pool_timeout`` has no counterpart: a cluster client keeps one pool per node and
    raises ``MaxConnectionsError`` past ``max_connections`` (per node) instead of waiting.
    """
    return PresenceRedisCluster.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        max_connections=max_connections,
    )


class SentinelMaster(Redis):
    """The master client of a Sentinel service that also closes its Sentinel connections.

    ``Sentinel.master_for`` returns a client whose pool asks the Sentinels for the master;
    closing that client leaves the connections to the Sentinels open (ResourceWarning),
    so this client closes them too.
    """

    sentinel: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master connections, then the Sentinel connections."""
        await super().aclose(close_connection_pool)
        for client in self.sentinel.sentinels:
            await client.aclose(close_connection_pool=True)


def sentinel_client(
    url: str,
    *,
    socket_timeout: float,
    socket_connect_timeout: float,
    max_connections: int,
    pool_timeout: float,
) -> Any:
    """The master of a Sentinel-managed service, from ``redis://sentinel-host:port/service``.

    ``pool_timeout`` has no counterpart: the Sentinel pool raises past ``max_connections``.
    """
    parsed = urlparse(url)
    sentinel = Sentinel(
        [(parsed.hostname or "127.0.0.1", parsed.port or 26379)],
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
    )
    master: SentinelMaster = sentinel.master_for(
        parsed.path.strip("/") or "mymaster",
        redis_class=SentinelMaster,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        max_connections=max_connections,
    )
    master.sentinel = sentinel
    return master


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free as well."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for a Redis Cluster node")


class RedisClusterProcesses:
    """Three cluster-enabled masters on loopback ports, joined with ``redis-cli --cluster``."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisProcess(
                port=free_cluster_port(),
                extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "5000"),
            )
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        """URL of the first node (the client discovers the others)."""
        return self.nodes[0].url

    def start(self) -> RedisClusterProcesses:
        """Start the nodes, create the cluster, wait until it serves every slot."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = redis_server_binary().replace("redis-server", "redis-cli")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for node in self.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as client:
                # Every node must see all slots served, or a client may hit CLUSTERDOWN.
                while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")
                    time.sleep(0.1)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


class RedisSentinelProcesses:
    """One master and one Sentinel watching it as ``mymaster``."""

    def __init__(self) -> None:
        self.master = RedisProcess()
        self.dir = tempfile.mkdtemp(prefix="presence-sentinel-")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<sentinel port>/mymaster``, for :func:`sentinel_client`."""
        return f"redis://127.0.0.1:{self.port}/mymaster"

    def start(self) -> RedisSentinelProcesses:
        """Start the master and the Sentinel; wait until the Sentinel knows the master."""
        self.master.start()
        conf = f"{self.dir}/sentinel.conf"
        with open(conf, "w") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
            )
        self.process = subprocess.Popen(
            [redis_server_binary(), conf, "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        with redis.Redis(port=self.port) as client:
            deadline = time.monotonic() + 30
            while not client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                if time.monotonic() > deadline:
                    raise TimeoutError("the Sentinel does not know the master")
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Stop the Sentinel and the master."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.master.stop()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
