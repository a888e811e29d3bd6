#!/usr/bin/env python3
"""Development entry point: ``python3 dev.py demo`` and ``python3 dev.py test``.

Needs only Python 3.10+. Creates ``.venv`` next to this file on first use, installs the
package with its test dependencies into it, then runs the demo or the test suite there.

    python3 dev.py demo [--port 8000]   # the example project on http://127.0.0.1:8000
    python3 dev.py test [pytest args]   # the whole test suite
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("PRESENCE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"


def ensure_environment() -> None:
    """Create the virtualenv and (re)install when pyproject.toml changed."""
    if sys.version_info < (3, 10):
        sys.exit(f"django-user-presence needs Python 3.10 or newer, this is {sys.version}")
    if not PYTHON.exists():
        print(f"Creating a virtualenv in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    print("Installing django-user-presence and its test dependencies ...", flush=True)
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            f"{ROOT}[redis,test]",
        ],
        check=True,
    )
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    """Run the command named by ``argv[0]``."""
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "test":
        args = [str(PYTHON), "-m", "pytest", *rest]
    else:
        args = [str(PYTHON), str(ROOT / "example_project" / "manage.py"), "demo", *rest]
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
