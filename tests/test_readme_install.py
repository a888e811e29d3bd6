"""The README's installation steps, followed literally in a throwaway project.

The code blocks of README.md's "Installation in your project" section are copied into a
project made by ``django-admin startproject``, with the package installed from a wheel
built from this checkout; the project then tracks a user online and offline through the
mixin on a real Redis. If the README drifts from the code, this fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Installation in your project", 1)[1].split("\n## ", 1)[0]
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", section, re.S)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
    )
    (path,) = out.glob("django_user_presence-*.whl")
    return path


def test_the_wheel_ships_the_package_typed_with_its_client_and_without_tests(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "django_presence/__init__.py" in names
    assert "django_presence/py.typed" in names
    assert "django_presence/backends/redis.py" in names
    assert "django_presence/static/django_presence/presence.js" in names
    assert "django_presence/static/django_presence/presence.mjs" in names
    assert "django_presence/templates/django_presence/admin/monitor.html" in names
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n]


SCRIPT = """
import asyncio, os, time
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "myproject.settings"
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
import jwt
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django_presence.services import user_online_service
from myproject.asgi import application

async def main():
    user = await get_user_model().objects.acreate(username="readme")
    token = jwt.encode({"user_id": user.pk, "exp": int(time.time()) + 60},
                       settings.SECRET_KEY, algorithm="HS256")
    ws = WebsocketCommunicator(application, "/ws/consultation/",
                               subprotocols=["access_token", token],
                               headers=[(b"origin", b"http://localhost")])
    connected, subprotocol = await ws.connect()
    assert (connected, subprotocol) == (True, "access_token"), (connected, subprotocol)
    await user.arefresh_from_db()
    print("online", await user_online_service.ais_user_online(user.pk), user.is_online)
    await ws.disconnect()
    await asyncio.sleep(0)
    await user.arefresh_from_db()
    print("offline", await user_online_service.ais_user_online(user.pk), user.is_online)

asyncio.run(main())
"""


def test_a_project_following_the_readme_tracks_a_user(
    wheel: Path, tmp_path: Path, redis_url: str
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    # The dependencies come from the suite's environment (its site-packages as a plain
    # path, so its editable install of this checkout is not active); the package itself
    # only from the wheel.
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "suite-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
    )
    project = tmp_path / "site"
    project.mkdir()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "myproject.settings"}
    subprocess.run([python, "-m", "django", "startproject", "myproject", str(project)], check=True)
    subprocess.run([python, "manage.py", "startapp", "users"], cwd=project, env=env, check=True)

    settings_step, model_step, presence_step, asgi_step, consumer_step, _ = readme_blocks()
    settings_path = project / "myproject" / "settings.py"
    settings = settings_path.read_text()
    settings = settings.replace(
        "INSTALLED_APPS = [",
        'INSTALLED_APPS = [\n    "channels",\n    "django_presence",\n    "users",',
    )
    assert '"channels",' in settings_step
    assert '"django_presence",' in settings_step
    assert "ASGI_APPLICATION" in settings_step
    settings += "\nASGI_APPLICATION = 'myproject.asgi.application'\n"
    settings += "AUTH_USER_MODEL = 'users.User'\n"
    settings += presence_step.replace("redis://127.0.0.1:6379", redis_url.rsplit("/", 1)[0])
    settings += "\nDJANGO_PRESENCE['OFFLINE_GRACE_PERIOD'] = 0\n"
    settings += "DJANGO_PRESENCE['KEY_PREFIX'] = 'readme-test'\n"
    settings_path.write_text(settings)
    (project / "users" / "models.py").write_text(model_step)
    (project / "users" / "consumers.py").write_text(consumer_step.replace("...", "pass"))
    asgi = asgi_step.replace(
        "URLRouter(websocket_urlpatterns)",
        "URLRouter(websocket_urlpatterns + [path('ws/consultation/', "
        "ConsultationConsumer.as_asgi())])",
    )
    asgi = asgi.replace(
        "from django_presence.routing import websocket_urlpatterns",
        "from django_presence.routing import websocket_urlpatterns\n"
        "from django.urls import path\nfrom users.consumers import ConsultationConsumer",
    )
    (project / "myproject" / "asgi.py").write_text(asgi)
    subprocess.run(
        [python, "manage.py", "makemigrations", "users"], cwd=project, env=env, check=True
    )
    result = subprocess.run(
        [python, "-c", SCRIPT + "\nimport django_presence; print(django_presence.__file__)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["online True True", "offline False False"]
    assert lines[2].startswith(str(env_dir)), "the package must come from the wheel"
