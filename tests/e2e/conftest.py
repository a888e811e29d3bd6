"""Fixtures of the browser tests: Chromium through Playwright, and example servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import CHROMIUM_ARGS, NO_PLAYWRIGHT, ExampleServer, chromium_path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's), shared by a module; each test uses contexts.

    Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running
    in the main thread while it is open, and the async tests that follow must not see it.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        problem = f"{NO_PLAYWRIGHT} ({e})"
    else:
        problem = None
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    try:
        executable = chromium_path()
    except FileNotFoundError as e:
        problem = str(e)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def example_server(tmp_path: Path) -> Iterator[ExampleServer]:
    """The example project served by uvicorn, with its own SQLite file and memory backends."""
    server = ExampleServer(tmp_path).start()
    yield server
    server.stop()
    print(f"--- {server.name} log ---\n{server.log_tail()}")


@pytest.fixture
def fresh_contexts(browser: Any) -> Iterator[Any]:
    """The browser; every context a test opens is closed after it."""
    yield browser
    for context in list(browser.contexts):
        context.close()
