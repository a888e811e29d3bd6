"""``manage.py presence``: status, sweep and reconcile, with their real effects."""

from __future__ import annotations

import json
import time
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_presence.services import user_online_service

from .conftest import SignalLog

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


def run(*args: str) -> str:
    out = StringIO()
    call_command("presence", *args, stdout=out)
    return out.getvalue()


def test_status_with_nobody_online(presence: dict[str, Any]) -> None:
    assert run("status") == "0 users online\n"
    assert json.loads(run("status", "--json")) == {"online_users": 0, "users": []}


def test_status_says_when_the_backend_cannot_see_other_processes(
    presence: dict[str, Any], backend_name: str
) -> None:
    err = StringIO()
    call_command("presence", "status", stdout=StringIO(), stderr=err)
    if backend_name == "memory":
        assert "cannot see the users of your servers" in err.getvalue()
    else:
        assert err.getvalue() == ""


def test_status(presence: dict[str, Any]) -> None:
    users = [User.objects.create_user(f"u{i}") for i in range(11)]
    for _ in range(3):
        user_online_service.add_user_connection(users[10].pk)
    user_online_service.add_user_connection(users[2].pk)
    closing = user_online_service.add_user_connection(users[1].pk)
    user_online_service.remove_user_connection(users[1].pk, closing, grace=30)
    user_online_service.set_status(users[2].pk, "busy")
    user_online_service.set_presence(users[2].pk, ttl=60, device="rota", activity="on_call")

    lines = run("status").splitlines()

    assert lines[0] == "3 users online"
    assert lines[1].split() == [
        "USER",
        "CONNECTIONS",
        "STATE",
        "STATUS",
        "DEVICES",
        "/",
        "ACTIVITIES",
    ]
    rows = [line.split(maxsplit=4) for line in lines[2:]]
    # Ordered by primary key, numerically; a user in their grace period shows 0.
    assert rows == [
        [str(users[1].pk), "0", "online", "available"],
        [str(users[2].pk), "2", "busy", "busy", "rota, on_call"],  # the server-set presence
        [str(users[10].pk), "3", "online", "available"],
    ]


def test_status_json(presence: dict[str, Any]) -> None:
    user = User.objects.create_user("alice")
    user_online_service.add_user_connection(user.pk)
    user_online_service.add_user_connection(user.pk)

    assert json.loads(run("status", "--json")) == {
        "online_users": 1,
        "users": [
            {
                "user_id": user.pk,
                "connections": 2,
                "state": "online",
                "status": "available",
                "devices": [],
                "activities": [],
            }
        ],
    }


def test_sweep(presence: dict[str, Any], signal_log: SignalLog) -> None:
    user = User.objects.create_user("alice")
    with override_settings(DJANGO_PRESENCE={**presence, "CONNECTION_TTL": 0.2}):
        assert run("sweep") == "Removed 0 expired connections.\n"
        user_online_service.add_user_connection(user.pk)
        user_online_service.add_user_connection(user.pk)
        time.sleep(0.4)

        assert run("sweep") == "Removed 2 expired connections.\n"

        assert not user_online_service.is_user_online(user.pk)
    user.refresh_from_db()
    assert not user.is_online
    assert signal_log.kinds() == ["online", "offline"]


def test_reconcile(presence: dict[str, Any]) -> None:
    stale, missing, right = (User.objects.create_user(n) for n in ("stale", "missing", "right"))
    user_online_service.add_user_connection(missing.pk)
    user_online_service.add_user_connection(right.pk)
    # The DB disagrees with the backend for two users (writes lost in a DB outage).
    User.objects.filter(pk=stale.pk).update(is_online=True)
    User.objects.filter(pk=missing.pk).update(is_online=False)

    output = run("reconcile")

    assert output == "Marked 1 users online and 1 offline (2 online in the backend).\n"
    online = set(User.objects.filter(is_online=True).values_list("pk", flat=True))
    assert online == {missing.pk, right.pk}
    stale.refresh_from_db()
    assert stale.last_seen is not None
    assert run("reconcile") == "Marked 0 users online and 0 offline (2 online in the backend).\n"


def test_reconcile_without_sync_user_model(presence: dict[str, Any]) -> None:
    with (
        override_settings(DJANGO_PRESENCE={**presence, "SYNC_USER_MODEL": False}),
        pytest.raises(CommandError, match="SYNC_USER_MODEL"),
    ):
        run("reconcile")


def test_an_action_is_required() -> None:
    with pytest.raises(CommandError):
        call_command("presence")


# -- reconcile on a large table, and its progress bar ------------------------------------------


def _register_in_backend_only(user_ids: list[Any]) -> None:
    """Connections the backend holds but the DB never heard of (a process died between)."""
    from asgiref.sync import async_to_sync

    from django_presence.backends import get_backend

    async def register() -> None:
        backend = get_backend()
        for pk in user_ids:
            await backend.add_connection(str(pk), f"c{pk}", ttl=60)
        await backend.aclose()

    async_to_sync(register)()


def _large_table(size: int) -> tuple[list[Any], set[Any], set[Any]]:
    """``size`` users: every 2nd marked online in the DB, every 3rd online in the backend.

    Returns the primary keys, those the DB must mark online and those it must mark offline.
    """
    User.objects.bulk_create(
        [User(username=f"user{i:05}", is_online=i % 2 == 0) for i in range(size)],
        batch_size=500,
    )
    pks = list(User.objects.order_by("pk").values_list("pk", flat=True))
    backend_online = [pk for i, pk in enumerate(pks) if i % 3 == 0]
    _register_in_backend_only(backend_online)
    to_online = {pk for i, pk in enumerate(pks) if i % 3 == 0 and i % 2 != 0}
    to_offline = {pk for i, pk in enumerate(pks) if i % 2 == 0 and i % 3 != 0}
    return backend_online, to_online, to_offline


def test_reconcile_a_table_of_3000_users(presence: dict[str, Any]) -> None:
    backend_online, to_online, to_offline = _large_table(3000)
    out, err = StringIO(), StringIO()
    started = time.monotonic()

    call_command("presence", "reconcile", "--batch-size", "250", "-v", "2", stdout=out, stderr=err)

    elapsed = time.monotonic() - started
    assert set(User.objects.filter(is_online=True).values_list("pk", flat=True)) == set(
        backend_online
    )
    assert (len(to_online), len(to_offline)) == (500, 1000)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "Marked 500 users online and 1000 offline (1000 online in the backend)."
    assert {int(line.split()[2]) for line in lines if line.endswith(" online.")} == to_online
    assert {int(line.split()[2]) for line in lines if line.endswith(" offline.")} == to_offline
    assert len(lines) == 1501
    assert err.getvalue() == ""  # not a terminal: no progress bar
    assert User.objects.filter(pk__in=to_offline, last_seen__isnull=True).count() == 0
    # Idempotent, and quiet at the default verbosity.
    assert run("reconcile", "--batch-size", "250") == (
        "Marked 0 users online and 0 offline (1000 online in the backend).\n"
    )
    assert elapsed < 30, elapsed


def _run_on_a_terminal(*args: str) -> tuple[str, str]:
    """Run ``presence`` with stderr on a real pseudo-terminal; return (stdout, terminal)."""
    import os
    import pty

    master, slave = pty.openpty()
    out = StringIO()
    try:
        with os.fdopen(os.dup(slave), "w") as terminal:
            assert terminal.isatty()
            call_command("presence", *args, stdout=out, stderr=terminal)
        os.set_blocking(master, False)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(slave)
        os.close(master)
    return out.getvalue(), drawn.decode()


def test_reconcile_draws_a_progress_bar_on_a_terminal(presence: dict[str, Any]) -> None:
    _large_table(600)

    output, drawn = _run_on_a_terminal("reconcile", "--batch-size", "50")

    assert output == "Marked 100 users online and 200 offline (200 online in the backend).\n"
    # 200 held online by the backend + 300 marked online in the DB.
    assert "\rReconciling users [" + "#" * 30 + "] 500/500 (100%)" in drawn
    assert drawn.endswith("\r")  # erased, so that the shell prompt starts clean
    assert "\n" not in drawn

    output, drawn = _run_on_a_terminal("reconcile", "--no-progress")
    assert output == "Marked 0 users online and 0 offline (200 online in the backend).\n"
    assert drawn == ""


@pytest.mark.parametrize("size", ["0", "-3", "many"])
def test_reconcile_batch_size_must_be_positive(presence: dict[str, Any], size: str) -> None:
    with pytest.raises(CommandError, match="must be a positive integer"):
        run("reconcile", "--batch-size", size)


def test_reconcile_verbosity_before_or_after_the_action(presence: dict[str, Any]) -> None:
    user = User.objects.create_user("alice")
    _register_in_backend_only([user.pk])
    assert run("-v", "2", "reconcile").splitlines()[0] == f"Marked user {user.pk} online."
    User.objects.filter(pk=user.pk).update(is_online=False)
    assert run("reconcile", "-v", "2").splitlines()[0] == f"Marked user {user.pk} online."
    User.objects.filter(pk=user.pk).update(is_online=False)
    assert run("reconcile", "-v", "0") == ""
