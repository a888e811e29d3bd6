"""Fixtures of the fault suite: a database for the server processes, and a Stack per test.

Every test gets its own Redis server process and its own key prefix; the database (with
its users) is created once per session and dropped at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import ALL_CLIENTS, FaultDatabase, RestartableRedis, Stack

#: Users created in the fault database (ids in ``fault_db.user_ids``).
USERS = 48


@pytest.fixture(scope="session")
def fault_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultDatabase]:
    """The database every server process of the fault suite shares."""
    db = FaultDatabase()
    events = tmp_path_factory.mktemp("faults-setup") / "events.jsonl"
    redis = RestartableRedis()  # never started: dbsetup needs a URL, not a server
    env = Stack(db=db, redis=redis, events_file=events).env()
    try:
        db.setup(USERS, env)
        yield db
    finally:
        db.drop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test body failed, for :func:`make_stack`'s teardown."""
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def make_stack(
    fault_db: FaultDatabase, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Stack]]:
    """Build a :class:`Stack` with its own running Redis; everything is stopped after."""
    stacks: list[Stack] = []

    def make(**options: Any) -> Stack:
        fault_db.reset_online()
        redis = RestartableRedis().start()
        stack = Stack(db=fault_db, redis=redis, events_file=tmp_path / "events.jsonl", **options)
        stacks.append(stack)
        return stack

    yield make
    # Clients a failed test left open would leak sockets into the next test's warnings.
    clients, ALL_CLIENTS[:] = list(ALL_CLIENTS), []
    for client in clients:
        await client.discard()
    for stack in stacks:
        stack.stop_all()
        stack.redis.stop()
        for server in stack.servers if request.node.stash.get(FAILED, False) else []:
            # The server logs explain most failures; they show in the test's report.
            print(f"--- log of server {server.name} (last 4000 chars) ---\n{server.log()[-4000:]}")
