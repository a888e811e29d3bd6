"""Run the Node test suite of presence.js (tests/js/*.test.js) as part of pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent

NO_NODE = (
    "The tests of presence.js need Node.js 18 or later on PATH as `node` "
    "(Debian/Ubuntu: apt-get install -y nodejs; macOS: brew install node)."
)


def test_presence_js_node_suite() -> None:
    """Backoff, buffering before the snapshot, re-subscription, heartbeats, requests."""
    node = shutil.which("node")
    assert node is not None, NO_NODE
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    assert major >= 18, f"{NO_NODE} Found {version.stdout.strip()}."
    files = sorted(str(path) for path in HERE.glob("*.test.js"))
    assert files, f"No *.test.js files in {HERE}"
    result = subprocess.run(
        [node, "--test", *files], capture_output=True, text=True, timeout=120, cwd=HERE
    )
    assert result.returncode == 0, f"node --test failed:\n{result.stdout}\n{result.stderr}"
    assert "# fail 0" in result.stdout, result.stdout
