"""The README's installation steps, followed literally in throwaway projects.

The code blocks of README.md's "Installation in your project" section are copied into
projects made by ``django-admin startproject``, with the package installed from a wheel
built from this checkout (one virtualenv for the module):

- a custom user model with the mixin and JWT clients: a user tracked online and offline
  through the mixin on a real Redis;
- a brand-new project on the default ``auth.User`` with ``STORE = "table"``, session
  login and Channels' ``AuthMiddlewareStack``: a logged-in browser's socket on
  ``ws/user/`` makes the user online, ``User.objects.filter(presence__is_online=True)``
  finds them, and the admin's user list shows both presence columns.

If the README drifts from the code, this fails.
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


def readme_block(containing: str) -> str:
    """The one python block of the installation section that contains ``containing``."""
    [block] = [b for b in readme_blocks() if containing in b]
    return block


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
    assert "django_presence/migrations/0001_initial.py" in names  # STORE = "table"
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


@pytest.fixture(scope="module")
def python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv with the package installed from the wheel, shared by the module."""
    env_dir = tmp_path_factory.mktemp("venv")
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
    return python


def start_project(python: str, project: Path) -> dict[str, str]:
    """``django-admin startproject myproject`` in ``project``; the environment to run it."""
    project.mkdir()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "myproject.settings"}
    subprocess.run([python, "-m", "django", "startproject", "myproject", str(project)], check=True)
    return env


def test_a_project_following_the_readme_tracks_a_user(
    python: str, tmp_path: Path, redis_url: str
) -> None:
    project = tmp_path / "site"
    env = start_project(python, project)
    subprocess.run([python, "manage.py", "startapp", "users"], cwd=project, env=env, check=True)

    settings_step = readme_block('"django_presence",')
    model_step = readme_block("class User(")
    presence_step = readme_block("CHANNEL_LAYERS")
    asgi_step = readme_block("from channels.auth import AuthMiddlewareStack")
    jwt_step = readme_block("JWTAuthMiddlewareStack(URLRouter")
    consumer_step = readme_block("class ConsultationConsumer")
    settings_path = project / "myproject" / "settings.py"
    settings = settings_path.read_text()
    settings = settings.replace(
        "INSTALLED_APPS = [",
        'INSTALLED_APPS = [\n    "channels",\n    "django_presence",\n    "users",',
    )
    assert '"channels",' in settings_step
    assert "ASGI_APPLICATION" in settings_step
    settings += "\nASGI_APPLICATION = 'myproject.asgi.application'\n"
    settings += "AUTH_USER_MODEL = 'users.User'\n"
    settings += presence_step.replace("redis://127.0.0.1:6379", redis_url.rsplit("/", 1)[0])
    settings += "\nDJANGO_PRESENCE['OFFLINE_GRACE_PERIOD'] = 0\n"
    settings += "DJANGO_PRESENCE['KEY_PREFIX'] = 'readme-test'\n"
    settings_path.write_text(settings)
    (project / "users" / "models.py").write_text(model_step)
    (project / "users" / "consumers.py").write_text(consumer_step.replace("...", "pass"))
    # The JWT variant of step 5: its import, and its stack in place of the session one.
    assert "from django_presence.middleware import JWTAuthMiddlewareStack" in jwt_step
    asgi = asgi_step.replace(
        "from channels.auth import AuthMiddlewareStack",
        "from django_presence.middleware import JWTAuthMiddlewareStack",
    ).replace("AuthMiddlewareStack(URLRouter", "JWTAuthMiddlewareStack(URLRouter")
    asgi = asgi.replace(
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
    assert lines[2].startswith(str(Path(python).parent.parent)), (
        "the package must come from the wheel"
    )


DEFAULT_USER_SCRIPT = """
import asyncio, os, re
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "myproject.settings"
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client
from django_presence.services import user_online_service
from myproject.asgi import application

alice = User.objects.create_user("alice", password="pw")
boss = User.objects.create_superuser("boss", "boss@example.com", "pw")
browser = Client()
assert browser.login(username="alice", password="pw")  # a session login
cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()

def admin_columns():
    staff = Client()
    staff.force_login(boss)
    html = staff.get("/admin/auth/user/", HTTP_HOST="localhost").content.decode()
    row = re.search(r"<tr[ >](?:(?!</tr>).)*>alice</a></th>.*?</tr>", html, re.S).group(0)
    return [re.search(rf'field-{name}">.*?alt="(\\w+)"', row, re.S).group(1)
            for name in ("online_now", "online_in_db")]

async def main():
    ws = WebsocketCommunicator(application, "/ws/user/",
                               headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)])
    connected, _ = await ws.connect()
    assert connected
    print("online", await user_online_service.ais_user_online(alice.pk))
    # The dots: a snapshot of the watched users, then their changes (here alice herself:
    # the default policy lets a user watch nobody else until the project says who).
    await ws.send_json_to({"type": "subscribe_presence", "id": 1,
                           "data": {"user_ids": [alice.pk]}})
    state = await ws.receive_json_from(timeout=5)
    print(state["type"], state["data"]["users"])
    print("table", [u.username async for u in User.objects.filter(presence__is_online=True)])
    print("admin", *await sync_to_async(admin_columns)())
    await ws.disconnect()
    await asyncio.sleep(0)
    seen = await User.objects.filter(presence__last_seen__isnull=False).acount()
    print("offline", [u async for u in User.objects.filter(presence__is_online=True)], seen)

asyncio.run(main())
"""


def test_a_new_project_on_the_default_user_gets_presence_from_the_readme(
    python: str, tmp_path: Path, redis_url: str
) -> None:
    """Default ``auth.User``, session login, ``AuthMiddlewareStack``, the table, the admin."""
    project = tmp_path / "site"
    env = start_project(python, project)
    subprocess.run([python, "manage.py", "startapp", "users"], cwd=project, env=env, check=True)
    settings_step = readme_block('"django_presence",')
    asgi_step = readme_block("from channels.auth import AuthMiddlewareStack")
    admin_step = readme_block("OnlineStatusAdminMixin")
    presence_step = readme_block("CHANNEL_LAYERS")
    assert '"channels",' in settings_step
    assert "from channels.auth import AuthMiddlewareStack" in asgi_step
    readme = (ROOT / "README.md").read_text()
    assert '"STORE": "table"' in readme
    assert "AUTH_USER_MODEL" in readme

    # The project's own code: the lines the README has it write into its settings, and
    # its admin.py. asgi.py and the Redis configuration are the README's, verbatim.
    own_code = [
        'INSTALLED_APPS += ["channels", "django_presence", "users"]',
        'ASGI_APPLICATION = "myproject.asgi.application"',
        'DJANGO_PRESENCE["STORE"] = "table"',
    ]
    own_code += [line for line in admin_step.splitlines() if line.strip()]
    assert len(own_code) < 15, own_code
    settings_path = project / "myproject" / "settings.py"
    settings = settings_path.read_text() + "\n"
    settings += presence_step.replace("redis://127.0.0.1:6379", redis_url.rsplit("/", 1)[0])
    settings += "\n" + "\n".join(own_code[:3]) + "\n"
    # The test's own: no grace before offline, keys of its own on the shared Redis.
    settings += "DJANGO_PRESENCE['OFFLINE_GRACE_PERIOD'] = 0\n"
    settings += "DJANGO_PRESENCE['KEY_PREFIX'] = 'readme-default-user'\n"
    settings_path.write_text(settings)
    (project / "myproject" / "asgi.py").write_text(asgi_step)
    (project / "users" / "admin.py").write_text(admin_step)

    result = subprocess.run(
        [python, "-c", DEFAULT_USER_SCRIPT],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "online True",
        "presence_state {'1': True}",
        "table ['alice']",
        "admin True True",
        "offline [] 1",
    ]
