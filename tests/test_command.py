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


def test_status(presence: dict[str, Any]) -> None:
    users = [User.objects.create_user(f"u{i}") for i in range(11)]
    for _ in range(3):
        user_online_service.add_user_connection(users[10].pk)
    user_online_service.add_user_connection(users[2].pk)
    closing = user_online_service.add_user_connection(users[1].pk)
    user_online_service.remove_user_connection(users[1].pk, closing, grace=30)

    lines = run("status").splitlines()

    assert lines[0] == "3 users online"
    assert lines[1].split() == ["USER", "CONNECTIONS"]
    rows = [line.split() for line in lines[2:]]
    # Ordered by primary key, numerically; a user in their grace period shows 0.
    assert rows == [[str(users[1].pk), "0"], [str(users[2].pk), "1"], [str(users[10].pk), "3"]]


def test_status_json(presence: dict[str, Any]) -> None:
    user = User.objects.create_user("alice")
    user_online_service.add_user_connection(user.pk)
    user_online_service.add_user_connection(user.pk)

    assert json.loads(run("status", "--json")) == {
        "online_users": 1,
        "users": [{"user_id": user.pk, "connections": 2}],
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
