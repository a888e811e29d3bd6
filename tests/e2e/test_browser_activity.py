"""presence.js's activity tracking in a real browser: real input events, real visibility.

The Node tests (tests/js/activity.test.js) cover the throttle on a fake page; this checks
that Chromium's own events reach it: a click, a key, the wheel, with the listener options
the client passes (captured, passive), and nothing after close(). The page
opens a client of its own (with the example's token, like the page's), with a short
activityInterval and a device of its own, next to the example page's client; the test
reads the frames its socket sends.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .harness import ExampleServer, log_in, wait_connected

pytestmark = pytest.mark.server

INTERVAL_MS = 1000
DEVICE = "e2e-activity"

OPEN_CLIENT = """([interval, device]) => new Promise((resolve, reject) => {
  const client = new DjangoPresence.PresenceClient({
    url: "/ws/user/", activityInterval: interval, device: device,
    getToken: () => fetch(document.body.dataset.tokenUrl, { credentials: "same-origin" })
      .then((response) => response.json()).then((data) => data.token),
  });
  window.activityClient = client;
  const closes = [];
  client.on("close", (event) => closes.push(event.code));
  client.on("open", () => resolve(client.options.trackActivity));
  setTimeout(() => reject(new Error("not open: " + client.state + " " + closes)), 10000);
  client.connect();
})"""


def test_real_input_sends_activity_at_most_once_per_interval(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    page = log_in(fresh_contexts, example_server, "doctor")
    wait_connected(page)
    sent: list[dict[str, Any]] = []

    def on_socket(socket: Any) -> None:
        if f"device={DEVICE}" in socket.url:
            socket.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", on_socket)
    assert page.evaluate(OPEN_CLIENT, [INTERVAL_MS, DEVICE]) is True
    assert page.evaluate("document.visibilityState") == "visible"

    def activity() -> int:
        return sum(1 for frame in sent if frame["type"] == "activity")

    def wait_for_activity(count: int) -> None:
        deadline = time.monotonic() + 5
        while activity() < count:
            assert time.monotonic() < deadline, f"{activity()} activity frames: {sent}"
            page.wait_for_timeout(20)

    # Connecting counted as activity: the first interval is quiet.
    page.wait_for_timeout(INTERVAL_MS + 100)
    page.mouse.click(600, 650)
    wait_for_activity(1)
    # Input within the interval sends nothing more.
    page.keyboard.press("Shift")
    page.mouse.wheel(0, 200)
    page.wait_for_timeout(INTERVAL_MS // 4)
    assert activity() == 1
    # After the interval, the wheel alone is activity.
    page.wait_for_timeout(INTERVAL_MS + 100)
    page.mouse.wheel(0, -200)
    wait_for_activity(2)
    assert [frame["data"] for frame in sent if frame["type"] == "activity"] == [{}, {}]

    # After close(), input sends nothing (its listeners are gone with the socket).
    page.evaluate("window.activityClient.close()")
    page.wait_for_timeout(INTERVAL_MS + 100)
    page.mouse.click(600, 650)
    page.keyboard.press("Shift")
    page.wait_for_timeout(200)
    assert activity() == 2
