"""The nginx configuration of docs/deployment.md, run in front of uvicorn: a wss:// socket
to ws/user/ passes through it.

The block titled ``/etc/nginx/conf.d/myproject.conf`` is taken from the page as it is,
with only its ports, upstream address and certificate paths replaced by the test's own
(a self-signed certificate made with ``openssl``). The test fails, never skips, without
nginx or openssl.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect as ws_connect

from .servers import AsgiServer, free_port, stop_process, wait_for_port
from .test_docs import DOCS, code_blocks
from .tokens import make_token

pytestmark = pytest.mark.server

NO_NGINX = (
    "This test needs nginx and openssl on PATH (Debian/Ubuntu: apt-get install nginx-light "
    "openssl)."
)
TITLE = "/etc/nginx/conf.d/myproject.conf"


def documented_config() -> str:
    [block] = [b for b in code_blocks(DOCS / "deployment.md") if b.title == TITLE]
    assert block.language == "nginx"
    return block.code


def test_the_documented_config_has_what_websockets_need() -> None:
    config = documented_config()
    for line in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_read_timeout 1h;",
        "server 127.0.0.1:8000;",
        "listen 443 ssl;",
        "listen 80;",
    ):
        assert line in config, line


@pytest.fixture
def uvicorn(tmp_path: Path, redis_url: str) -> Iterator[AsgiServer]:
    server = AsgiServer(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        redis_url=redis_url,
        key_prefix=f"nginx-{uuid.uuid4().hex[:10]}",
    )
    server.manage("migrate", "--verbosity", "0")
    server.start()
    yield server
    server.stop()
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match="{" + server.prefix + "}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def nginx(tmp_path: Path, uvicorn: AsgiServer) -> Iterator[int]:
    """nginx with the documented config in front of ``uvicorn``; yields its TLS port."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    openssl = shutil.which("openssl")
    assert binary is not None, NO_NGINX
    assert openssl is not None, NO_NGINX
    directory = tmp_path / "nginx"
    (directory / "logs").mkdir(parents=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    tls_port, http_port = free_port(), free_port()
    site = documented_config()
    replacements = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{uvicorn.port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "/etc/letsencrypt/live/example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/example.com/privkey.pem": str(key),
    }
    for old, new in replacements.items():
        assert old in site, old
        site = site.replace(old, new)
    temp = {
        name: directory / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    main = "\n".join(
        [
            "user root;" if os.geteuid() == 0 else "",
            "worker_processes 1;",
            f"pid {directory / 'nginx.pid'};",
            f"error_log {directory / 'logs' / 'error.log'} warn;",
            "events { worker_connections 64; }",
            "http {",
            "access_log off;",
            *(f"{name}_temp_path {path};" for name, path in temp.items()),
            site,
            "}",
        ]
    )
    (directory / "nginx.conf").write_text(main)
    command = [
        binary,
        "-p",
        str(directory),
        "-c",
        str(directory / "nginx.conf"),
        "-g",
        "daemon off;",
    ]
    check = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    with (directory / "logs" / "stderr.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(tls_port, timeout=15)
            yield tls_port
        finally:
            stop_process(process, timeout=10)


def create_user(server: AsgiServer, username: str) -> int:
    out = server.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"print(get_user_model().objects.create_user({username!r}).pk)",
    )
    return int(out.strip().splitlines()[-1])


async def test_a_wss_connection_to_ws_user_through_the_documented_nginx(
    nginx: int, uvicorn: AsgiServer
) -> None:
    user_id = create_user(uvicorn, "behind-nginx")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with ws_connect(
        f"wss://127.0.0.1:{nginx}/ws/user/",
        subprotocols=["access_token", make_token(user_id)],  # type: ignore[list-item]
        ssl=context,
        open_timeout=15,
    ) as ws:
        assert ws.subprotocol == "access_token"
        await ws.send(json.dumps({"type": "ping", "id": "through-nginx"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply == {"type": "pong", "data": {}, "id": "through-nginx"}
        await ws.send(
            json.dumps({"type": "subscribe_presence", "id": 2, "data": {"user_ids": [user_id]}})
        )
        state = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert state["type"] == "presence_state"
        assert state["data"]["users"][str(user_id)] is True
    # Python 3.10's TLS transport is closed only once its shutdown ran on the loop: without
    # this, it is garbage-collected unclosed after the test's loop ended (ResourceWarning).
    ws.transport.close()
    await asyncio.sleep(0.2)
