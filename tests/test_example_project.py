"""The example project: its own tests (with its own settings) and the demo command.

The example has its own user model, so its tests cannot share this process's settings:
they run in a subprocess with ``example_project.settings``, once on the embedded
defaults and once on Redis (channels_redis and the Redis presence backend).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "example_project"


def example_env(**extra: str) -> dict[str, str]:
    """This environment minus the test settings, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "PYTHONPATH")
    }
    # The example's suite creates users with passwords, the demo command seeds three.
    env["EXAMPLE_INSECURE_FAST_PASSWORD_HASHING"] = "1"
    env.update(extra)
    return env


@pytest.mark.parametrize("layer", ["memory", "redis"])
def test_example_project_suite(layer: str, redis_url: str) -> None:
    """The consultation consumer with and without the mixin, the pages, the demo command."""
    extra = {"PRESENCE_OFFLINE_GRACE_PERIOD": "0"}
    if layer == "redis":
        prefix = f"example-{uuid.uuid4().hex[:10]}"
        extra.update(
            REDIS_URL=redis_url, PRESENCE_KEY_PREFIX=prefix, EXAMPLE_CHANNELS_PREFIX=prefix
        )
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "pytest", str(EXAMPLE_DIR / "example_tests"), "-v",
                "--ds", "example_project.settings", "-o", "pythonpath=example_project .",
            ],
            cwd=ROOT,
            env=example_env(**extra),
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        pytest.fail(f"The example's tests hung; their output so far:\n{output}")
    assert result.returncode == 0, f"{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    assert " passed" in result.stdout
    assert " skipped" not in result.stdout


def test_demo_command_from_a_clean_state(tmp_path: Path) -> None:
    """``manage.py demo --no-serve`` on an empty database, as a new user runs it."""
    database = tmp_path / "fresh.sqlite3"
    result = subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "manage.py"), "demo", "--no-serve", "--port", "8011"],
        cwd=tmp_path,
        env=example_env(EXAMPLE_DATABASE_PATH=str(database)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert database.exists()
    assert "doctor   / doctor-demo" in result.stdout
    assert "patient  / patient-demo" in result.stdout
    assert "admin    / admin-demo   (staff)" in result.stdout
    assert "Open http://127.0.0.1:8011/" in result.stdout
    assert "Presence and channel layer: in-memory" in result.stdout
