"""The database copy in the package's table (``STORE = "table"``) and in renamed fields.

Everything that writes or reads the copy is exercised with the table: the transition
engine (upserts, two statements at most per batch), ``reconcile()`` in both directions,
the snapshot's ``last_seen``, the admin's column and filter, ``manage.py presence``. The
test project's user model also has ``is_online``; the tests check that the table, not
those fields, is what moves. The same tests run on SQLite and PostgreSQL
(``DATABASE_URL``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import path, reverse
from django.utils import timezone

from django_presence import transitions
from django_presence.admin import OnlineInDbListFilter, OnlineNowListFilter, OnlineStatusAdminMixin
from django_presence.backends import Change, Transition
from django_presence.models import UserPresence
from django_presence.services import user_online_service
from django_presence.store import database_copy

from .conftest import SignalLog

User = get_user_model()

site = admin.AdminSite(name="admin")


@admin.register(User, site=site)
class ProjectUserAdmin(OnlineStatusAdminMixin, UserAdmin):  # type: ignore[type-arg]
    """A project's own user admin, with the mixin first."""


urlpatterns = [path("admin/", site.urls)]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]

CHANGELIST = "admin:testapp_user_changelist"
MONITOR = "admin:testapp_user_presence"
RECONCILE = "admin:testapp_user_presence_reconcile"


@pytest.fixture
def table(presence: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``presence`` with ``STORE = "table"``."""
    settings_dict = {**presence, "STORE": "table"}
    with override_settings(DJANGO_PRESENCE=settings_dict):
        yield settings_dict


def make_users(*names: str) -> list[Any]:
    return [User.objects.create_user(username=name) for name in names]


def row(user: Any) -> UserPresence | None:
    return UserPresence.objects.filter(user=user).first()


def writes(context: CaptureQueriesContext) -> list[str]:
    """The INSERT and UPDATE statements run while ``context`` was open."""
    return [
        q["sql"] for q in context.captured_queries if q["sql"].startswith(("INSERT", "UPDATE"))
    ]


# -- the transition engine -----------------------------------------------------------------


def test_transitions_write_the_table_not_the_user_model(
    table: dict[str, Any], signal_log: SignalLog
) -> None:
    alice = make_users("alice")[0]
    assert database_copy() is not None
    with CaptureQueriesContext(connection) as online_queries:
        first = user_online_service.add_user_connection(alice.pk)
    presence = row(alice)
    assert presence is not None
    assert presence.is_online
    assert presence.last_seen is None
    [insert] = writes(online_queries)
    assert "ON CONFLICT" in insert
    alice.refresh_from_db()
    assert alice.is_online is False  # the user model's own field is not the copy

    with CaptureQueriesContext(connection) as offline_queries:
        user_online_service.remove_user_connection(alice.pk, first)
    presence = row(alice)
    assert presence is not None
    assert not presence.is_online
    assert presence.last_seen is not None
    assert len(writes(offline_queries)) == 1

    # Back online: the row is updated in place, last_seen kept.
    seen = presence.last_seen
    user_online_service.add_user_connection(alice.pk)
    presence = row(alice)
    assert presence is not None
    assert presence.is_online
    assert presence.last_seen == seen
    assert UserPresence.objects.count() == 1
    assert signal_log.kinds() == ["online", "offline", "online"]
    assert list(User.objects.filter(presence__is_online=True)) == [alice]


def test_a_batch_is_two_statements_whatever_its_size(table: dict[str, Any]) -> None:
    users = make_users(*(f"u{i}" for i in range(6)))
    UserPresence.objects.create(user=users[0], is_online=False)
    UserPresence.objects.create(user=users[5], is_online=True)
    copy = database_copy()
    assert copy is not None
    state = {str(user.pk): i < 3 for i, user in enumerate(users)}
    with CaptureQueriesContext(connection) as queries:
        transitions._write_online_state(copy, state, timezone.now())
    assert len(writes(queries)) == 2
    rows = dict(UserPresence.objects.values_list("user_id", "is_online"))
    assert rows == {user.pk: i < 3 for i, user in enumerate(users)}


def test_apply_writes_the_table_and_corrects_what_the_backend_contradicts(
    table: dict[str, Any], signal_log: SignalLog
) -> None:
    alice, bob = make_users("alice", "bob")
    user_online_service.add_user_connection(alice.pk)
    signal_log.clear()
    # A transition the backend no longer agrees with (bob holds no connection): the
    # engine writes it, reads the backend again and corrects the row.
    batch = [
        Change(str(alice.pk), Transition.ONLINE, 0, 10**15),
        Change(str(bob.pk), Transition.ONLINE, 0, 10**15),
    ]
    async_to_sync(transitions.apply)(batch)
    assert dict(UserPresence.objects.values_list("user_id", "is_online")) == {
        alice.pk: True,
        bob.pk: False,
    }
    assert signal_log.kinds() == ["online", "online"]


def test_a_user_deleted_meanwhile_does_not_lose_the_others(table: dict[str, Any]) -> None:
    alice, bob = make_users("alice", "bob")
    gone = bob.pk
    bob.delete()
    copy = database_copy()
    assert copy is not None
    copy.write([alice.pk, gone], [], timezone.now())
    assert list(UserPresence.objects.values_list("user_id", "is_online")) == [(alice.pk, True)]


def test_users_online_through_the_table_can_be_queried(table: dict[str, Any]) -> None:
    alice, bob, carol = make_users("alice", "bob", "carol")
    user_online_service.add_user_connection(alice.pk)
    connection_id = user_online_service.add_user_connection(bob.pk)
    user_online_service.remove_user_connection(bob.pk, connection_id)

    assert list(User.objects.filter(presence__is_online=True)) == [alice]
    # carol never connected: no row, offline for exclude() but not for filter(False).
    assert set(User.objects.exclude(presence__is_online=True)) == {bob, carol}
    assert list(User.objects.filter(presence__is_online=False)) == [bob]
    assert User.objects.filter(presence__last_seen__isnull=False).get() == bob


def test_a_bad_store_at_run_time_is_logged_and_the_signals_still_go_out(
    presence: dict[str, Any], signal_log: SignalLog, caplog: pytest.LogCaptureFixture
) -> None:
    alice = make_users("alice")[0]
    with override_settings(DJANGO_PRESENCE={**presence, "STORE": "db"}):
        user_online_service.add_user_connection(alice.pk)
    assert signal_log.kinds() == ["online"]
    assert "Could not write is_online for 1 users" in caplog.text
    assert "DJANGO_PRESENCE['STORE']" in caplog.text


# -- reconcile -------------------------------------------------------------------------------


def test_reconcile_repairs_the_table_both_ways(
    table: dict[str, Any], signal_log: SignalLog
) -> None:
    missing, stale, right, never = make_users("missing", "stale", "right", "never")
    user_online_service.add_user_connection(missing.pk)
    user_online_service.add_user_connection(right.pk)
    # The DB lost writes: missing has no row at all, stale's row says online.
    UserPresence.objects.filter(user=missing).delete()
    UserPresence.objects.create(user=stale, is_online=True)
    signal_log.clear()

    result = user_online_service.reconcile()

    assert result.marked_online == [missing.pk]
    assert result.marked_offline == [stale.pk]
    assert set(User.objects.filter(presence__is_online=True)) == {missing, right}
    stale_row = row(stale)
    assert stale_row is not None
    assert stale_row.last_seen is not None
    assert row(never) is None
    assert sorted(signal_log.kinds()) == ["offline", "online"]
    again = user_online_service.reconcile()
    assert (again.marked_online, again.marked_offline) == ([], [])


def test_the_reconcile_command_uses_the_table(table: dict[str, Any]) -> None:
    alice = make_users("alice")[0]
    user_online_service.add_user_connection(alice.pk)
    UserPresence.objects.all().delete()
    out = StringIO()
    call_command("presence", "reconcile", "--no-progress", stdout=out)
    assert out.getvalue() == "Marked 1 users online and 0 offline (1 online in the backend).\n"
    assert list(User.objects.filter(presence__is_online=True)) == [alice]


# -- the snapshot ------------------------------------------------------------------------------


def test_presence_state_reads_last_seen_from_the_table(table: dict[str, Any]) -> None:
    alice, bob, carol = make_users("alice", "bob", "carol")
    user_online_service.add_user_connection(alice.pk)
    connection_id = user_online_service.add_user_connection(bob.pk)
    user_online_service.remove_user_connection(bob.pk, connection_id)
    bob_row = row(bob)
    assert bob_row is not None

    states = async_to_sync(user_online_service.aget_presence_state)([alice.pk, bob.pk, carol.pk])

    assert states[str(alice.pk)].is_online
    assert states[str(alice.pk)].last_seen is None
    assert not states[str(bob.pk)].is_online
    assert bob_row.last_seen is not None
    assert states[str(bob.pk)].last_seen == bob_row.last_seen.isoformat()
    assert states[str(carol.pk)].last_seen is None  # no row: never seen


# -- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def staff(client: Client) -> Any:
    user = User.objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(user)
    return user


def cell(html: str, username: str, field: str) -> str:
    for tr in re.findall(r"<tr[ >].*?</tr>", html, re.S):
        if re.search(rf">{re.escape(username)}</a></th>", tr):
            match = re.search(rf'<td class="field-{field}">(.*?)</td>', tr, re.S)
            assert match, f"no column {field} in the row of {username}"
            alt = re.search(r'alt="(\w+)"', match.group(1))
            return alt.group(1) if alt else match.group(1).strip()
    raise AssertionError(f"{username} is not listed")


def listed(html: str) -> set[str]:
    return set(re.findall(r'<th class="field-username"><a href="[^"]*">([^<]+)</a></th>', html))


def test_admin_column_and_filter_read_the_table(
    table: dict[str, Any], client: Client, staff: Any
) -> None:
    alice, bob, carol = make_users("alice", "bob", "carol")
    user_online_service.add_user_connection(alice.pk)
    # A stale row: the table says bob is online, the backend does not.
    UserPresence.objects.create(user=bob, is_online=True)
    User.objects.filter(pk=carol.pk).update(is_online=True)  # not the copy: ignored

    with CaptureQueriesContext(connection) as queries:
        html = client.get(reverse(CHANGELIST)).content.decode()
    assert [cell(html, name, "online_in_db") for name in ("alice", "bob", "carol")] == [
        "True",
        "True",
        "False",
    ]
    assert [cell(html, name, "online_now") for name in ("alice", "bob", "carol")] == [
        "True",
        "False",
        "False",
    ]
    # The column costs no query of its own: the table is joined to the page's query.
    assert not [
        q for q in queries.captured_queries if 'FROM "django_presence_userpresence"' in q["sql"]
    ]
    assert "online_db=yes" in html

    online = client.get(reverse(CHANGELIST) + "?online_db=yes").content.decode()
    assert listed(online) == {"alice", "bob"}
    offline = client.get(reverse(CHANGELIST) + "?online_db=no").content.decode()
    assert listed(offline) == {"carol", "boss"}  # no row counts as offline
    # Sorted by the column (list_display position 7: the checkbox, UserAdmin's five,
    # online_now, online_in_db), online first.
    ordered = client.get(reverse(CHANGELIST) + "?o=-7.1").content.decode()
    names = re.findall(r'<th class="field-username"><a href="[^"]*">([^<]+)</a></th>', ordered)
    assert set(names[:2]) == {"alice", "bob"}

    filters = site._registry[User].get_list_filter(None)  # type: ignore[arg-type]
    assert filters[-2:] == [OnlineNowListFilter, OnlineInDbListFilter]


def test_admin_monitor_and_reconcile_with_the_table(
    table: dict[str, Any], client: Client, staff: Any
) -> None:
    alice = make_users("alice")[0]
    user_online_service.add_user_connection(alice.pk)
    UserPresence.objects.all().delete()
    html = client.get(reverse(MONITOR)).content.decode()
    assert "alice" in html
    assert "is_online is False in the database" in html  # no row: the copy says offline
    assert 'id="presence-reconcile"' in html
    response = client.post(reverse(RECONCILE), follow=True)
    assert "Marked 1 users online and 0 offline." in response.content.decode()
    assert list(User.objects.filter(presence__is_online=True)) == [alice]


def test_without_a_copy_the_admin_adds_no_db_column(
    presence: dict[str, Any], client: Client, staff: Any
) -> None:
    make_users("alice")
    with override_settings(DJANGO_PRESENCE={**presence, "STORE": None}):
        html = client.get(reverse(CHANGELIST)).content.decode()
    assert "field-online_now" in html
    assert "field-online_in_db" not in html
    assert "online_db=" not in html


# -- renamed fields on the user model ----------------------------------------------------------


def test_renamed_fields_are_the_ones_written_and_read(presence: dict[str, Any]) -> None:
    # The project's own fields, under its own names (any BooleanField and nullable
    # DateTimeField); the mixin's is_online and last_seen are left alone.
    renamed = {**presence, "ONLINE_FIELD": "is_superuser", "LAST_SEEN_FIELD": "last_login"}
    alice = make_users("alice")[0]
    with override_settings(DJANGO_PRESENCE=renamed):
        connection_id = user_online_service.add_user_connection(alice.pk)
        alice.refresh_from_db()
        assert (alice.is_superuser, alice.is_online) == (True, False)
        assert list(User.objects.filter(is_superuser=True)) == [alice]
        user_online_service.remove_user_connection(alice.pk, connection_id)
        alice.refresh_from_db()
        assert alice.is_superuser is False
        assert alice.last_login is not None
        assert alice.last_seen is None
        states = async_to_sync(user_online_service.aget_presence_state)([alice.pk])
        assert alice.last_login is not None
        assert states[str(alice.pk)].last_seen == alice.last_login.isoformat()
        User.objects.filter(pk=alice.pk).update(is_superuser=True)
        assert user_online_service.reconcile().marked_offline == [alice.pk]
