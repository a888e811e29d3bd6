"""The backend contract suite, on Redis Sentinel and Cluster.

Every contract test (``tests/test_backend_contract.py``,
``tests/test_backend_contract_rooms.py``, ``tests/test_backend_contract_streams.py``,
``tests/test_backend_contract_availability.py`` and
``tests/test_backend_contract_servers.py``) is imported here and runs against the Redis
backend with a ``client_factory`` for each deployment; the deployments are real processes
started by this module (three cluster masters, or one master and one Sentinel).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_presence.backends import reset_backend

from ..test_backend_contract import *  # noqa: F403 - the contract tests themselves
from ..test_backend_contract_availability import *  # noqa: F403 - and availability
from ..test_backend_contract_rooms import *  # noqa: F403 - and the rooms and the clock
from ..test_backend_contract_servers import *  # noqa: F403 - and the servers' leases
from ..test_backend_contract_streams import *  # noqa: F403 - and the streams
from .topologies import (
    RedisClusterProcesses,
    RedisSentinelProcesses,
    cluster_client,
    sentinel_client,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """Three Redis Cluster masters on loopback ports."""
    cluster = RedisClusterProcesses().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def redis_sentinel() -> Iterator[RedisSentinelProcesses]:
    """A Redis master watched by one Sentinel."""
    sentinel = RedisSentinelProcesses().start()
    yield sentinel
    sentinel.stop()


@pytest.fixture(params=["sentinel", "cluster"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """Overrides the suite's memory/redis parametrization with the two topologies."""
    return str(request.param)


@pytest.fixture
def presence(backend_name: str, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The Redis backend with the deployment's client factory and a private key prefix."""
    from django.conf import settings

    if backend_name == "cluster":
        deployment: Any = request.getfixturevalue("redis_cluster")
        factory = cluster_client
    else:
        deployment = request.getfixturevalue("redis_sentinel")
        factory = sentinel_client
    settings_dict = {
        **settings.DJANGO_PRESENCE,
        "BACKEND": "django_presence.backends.redis.RedisBackend",
        "REDIS_URL": deployment.url,
        "KEY_PREFIX": f"contract-{uuid.uuid4().hex[:12]}",
        "BACKEND_OPTIONS": {"client_factory": factory},
    }
    with override_settings(DJANGO_PRESENCE=settings_dict):
        yield settings_dict
    reset_backend()
