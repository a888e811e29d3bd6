"""The admin integration, through Django's test client, on both backends.

The test project registers no user admin (a project brings its own), so this module is the
URLconf of its tests: an admin site with a ``UserAdmin`` that adds the mixin, as a project
would write it.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.apps import apps as django_apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import path, reverse
from django.utils import timezone

from django_presence.admin import OnlineNowListFilter, OnlineStatusAdminMixin, duration
from django_presence.backends import get_backend
from django_presence.backends.memory import MemoryBackend
from django_presence.backends.redis import RedisBackend
from django_presence.protocol import CLOSE_DISCONNECTED
from django_presence.services import user_online_service

from .test_mixin import open_socket

User = get_user_model()

site = admin.AdminSite(name="admin")


@admin.register(User, site=site)
class ProjectUserAdmin(OnlineStatusAdminMixin, UserAdmin):  # type: ignore[type-arg]
    """A project's own user admin, with the mixin first."""


urlpatterns = [path("admin/", site.urls)]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]

CHANGELIST = "admin:testapp_user_changelist"
MONITOR = "admin:testapp_user_presence"
SWEEP = "admin:testapp_user_presence_sweep"
RECONCILE = "admin:testapp_user_presence_reconcile"
DISCONNECT = "admin:testapp_user_presence_disconnect"


class _Counting:
    """Counts the calls of each backend method, to show there is no N+1 on the backend."""

    calls: Counter[str]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.calls = Counter()

    async def online_user_ids(self, user_ids: Any) -> set[str]:
        self.calls["online_user_ids"] += 1
        return await super().online_user_ids(user_ids)  # type: ignore[misc,no-any-return]

    async def is_online(self, user_id: str) -> bool:
        self.calls["is_online"] += 1
        return await super().is_online(user_id)  # type: ignore[misc,no-any-return]

    async def all_online_user_ids(self) -> set[str]:
        self.calls["all_online_user_ids"] += 1
        return await super().all_online_user_ids()  # type: ignore[misc,no-any-return]

    def online_user_ids_sync(self, user_ids: Any) -> set[str]:
        self.calls["online_user_ids_sync"] += 1
        return super().online_user_ids_sync(user_ids)  # type: ignore[misc,no-any-return]

    def is_online_sync(self, user_id: str) -> bool:
        self.calls["is_online_sync"] += 1
        return super().is_online_sync(user_id)  # type: ignore[misc,no-any-return]


class CountingMemoryBackend(_Counting, MemoryBackend):
    """MemoryBackend that counts its calls."""


class CountingRedisBackend(_Counting, RedisBackend):
    """RedisBackend that counts its calls."""


@pytest.fixture
def counting(presence: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``presence`` backend, replaced by its call-counting subclass."""
    name = "Redis" if presence["BACKEND"].endswith("RedisBackend") else "Memory"
    settings_dict = {**presence, "BACKEND": f"{__name__}.Counting{name}Backend"}
    with override_settings(DJANGO_PRESENCE=settings_dict):
        yield settings_dict


@pytest.fixture
def staff(client: Client) -> Any:
    """A logged-in superuser."""
    user = User.objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(user)
    return user


def make_users(*names: str) -> list[Any]:
    return [User.objects.create_user(username=name) for name in names]


def cell(html: str, username: str, field: str) -> str:
    """The value of column ``field`` in the changelist row of ``username``.

    Boolean columns render as an icon whose alt text is True, False or None.
    """
    for row in re.findall(r"<tr[ >].*?</tr>", html, re.S):
        if re.search(rf">{re.escape(username)}</a></th>", row):
            match = re.search(rf'<td class="field-{field}">(.*?)</td>', row, re.S)
            assert match, f"no column {field} in the row of {username}"
            alt = re.search(r'alt="(\w+)"', match.group(1))
            return alt.group(1) if alt else match.group(1).strip()
    raise AssertionError(f"{username} is not listed")


def listed(html: str) -> set[str]:
    """Usernames listed on a changelist page."""
    return set(re.findall(r'<th class="field-username"><a href="[^"]*">([^<]+)</a></th>', html))


# -- changelist ------------------------------------------------------------------------------


def test_changelist_shows_live_presence_next_to_the_db_field(
    presence: dict[str, Any], client: Client, staff: Any
) -> None:
    alice, bob, carol = make_users("alice", "bob", "carol")
    user_online_service.add_user_connection(alice.pk)
    user_online_service.add_user_connection(alice.pk)
    user_online_service.add_user_connection(bob.pk)
    # The DB mirror says carol is online, but she holds no connection (a stale row).
    User.objects.filter(pk=carol.pk).update(is_online=True)

    response = client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    html = response.content.decode()
    assert [cell(html, name, "online_now") for name in ("alice", "bob", "carol")] == [
        "True",
        "True",
        "False",
    ]
    assert [cell(html, name, "online_in_db") for name in ("alice", "bob", "carol")] == [
        "True",
        "True",
        "True",
    ]
    assert "Connection monitor" in html
    assert reverse(MONITOR) in html


def test_changelist_reads_presence_once_per_page_and_adds_no_queries(
    counting: dict[str, Any], client: Client, staff: Any
) -> None:
    few = make_users("u0", "u1")
    for user in few:
        user_online_service.add_user_connection(user.pk)
    backend = get_backend()
    backend.calls.clear()  # type: ignore[attr-defined]
    with CaptureQueriesContext(connection) as few_queries:
        assert client.get(reverse(CHANGELIST)).status_code == 200
    few_calls = dict(backend.calls)  # type: ignore[attr-defined]

    many = make_users(*(f"v{i}" for i in range(30)))
    for user in many[::2]:
        user_online_service.add_user_connection(user.pk)
    backend.calls.clear()  # type: ignore[attr-defined]
    with CaptureQueriesContext(connection) as many_queries:
        response = client.get(reverse(CHANGELIST))
    many_calls = dict(backend.calls)  # type: ignore[attr-defined]

    assert response.status_code == 200
    assert len(listed(response.content.decode())) == 33  # boss, u0, u1, v0..v29
    assert few_calls == many_calls == {"online_user_ids_sync": 1}
    assert len(many_queries) == len(few_queries)


def test_online_now_filter_reads_the_backend_not_the_db(
    presence: dict[str, Any], client: Client, staff: Any
) -> None:
    alice, _bob, carol = make_users("alice", "bob", "carol")
    user_online_service.add_user_connection(alice.pk)
    User.objects.filter(pk=carol.pk).update(is_online=True)  # stale DB row

    online = client.get(reverse(CHANGELIST), {"online_now": "yes"})
    offline = client.get(reverse(CHANGELIST), {"online_now": "no"})

    assert listed(online.content.decode()) == {"alice"}
    assert listed(offline.content.decode()) == {"boss", "bob", "carol"}
    assert "online now" in online.content.decode()


def test_column_shows_unknown_when_the_backend_is_down(
    client: Client, staff: Any, redis_url: str
) -> None:
    make_users("alice")
    down = {
        "BACKEND": "django_presence.backends.redis.RedisBackend",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "BACKEND_OPTIONS": {"socket_connect_timeout": 0.5},
    }
    with override_settings(DJANGO_PRESENCE=down):
        response = client.get(reverse(CHANGELIST))
        filtered = client.get(reverse(CHANGELIST), {"online_now": "yes"})
        monitor = client.get(reverse(MONITOR))
        swept = client.post(reverse(SWEEP), follow=True)

    assert response.status_code == 200
    assert cell(response.content.decode(), "alice", "online_now") == "None"
    assert filtered.status_code == 200
    assert listed(filtered.content.decode()) == set()
    assert "presence backend is unavailable" in filtered.content.decode()
    assert monitor.status_code == 200
    assert "The presence backend is unavailable." in monitor.content.decode()
    assert "The sweep failed: the presence backend is unavailable." in swept.content.decode()


def test_mixin_keeps_the_projects_own_columns_and_filters(presence: dict[str, Any]) -> None:
    model_admin = site._registry[User]

    class Request:
        user = None

    columns = list(model_admin.get_list_display(Request()))  # type: ignore[arg-type]
    filters = list(model_admin.get_list_filter(Request()))  # type: ignore[arg-type]

    assert columns == [*UserAdmin.list_display, "online_now", "online_in_db"]
    assert filters == [*UserAdmin.list_filter, OnlineNowListFilter]


def test_a_project_that_lists_is_online_itself_gets_no_second_db_column(
    presence: dict[str, Any],
) -> None:
    class OwnColumns(OnlineStatusAdminMixin, UserAdmin):  # type: ignore[type-arg]
        list_display = ["username", "is_online"]

    model_admin = OwnColumns(User, site)

    class Request:
        user = None

    assert list(model_admin.get_list_display(Request())) == [  # type: ignore[arg-type]
        "username",
        "is_online",
        "online_now",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (59.4, "59 s"), (61, "1 min 1 s"), (7260, "2 h 1 min"), (97200, "1 d 3 h")],
)
def test_durations_read_like_a_human_would_write_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# -- connection monitor ----------------------------------------------------------------------


def test_monitor_lists_online_users_and_their_connections(
    presence: dict[str, Any], client: Client, staff: Any
) -> None:
    alice, bob, _carol = make_users("alice", "bob", "carol")
    add = async_to_sync(user_online_service.aadd_user_connection)
    add(alice.pk, "alice-tab-1", server="web-1:101")
    add(alice.pk, "alice-tab-2", server="web-2:202")
    add(bob.pk, "bob-phone", server="web-1:101")
    add(bob.pk, "bob-laptop", server="web-2:202")
    # What alice's second tab says it is, and her status: the monitor shows both.
    user_online_service.set_connection_data(
        alice.pk, "alice-tab-2", device="mobile", activity="in_call"
    )
    user_online_service.set_status(alice.pk, "busy", text="Ward round")
    # Bob closes both; the last one is kept for the offline grace period.
    user_online_service.remove_user_connection(bob.pk, "bob-phone", grace=60)
    user_online_service.remove_user_connection(bob.pk, "bob-laptop", grace=60)

    before = timezone.now()
    response = client.get(reverse(MONITOR))
    after = timezone.now()

    assert response.status_code == 200
    html = response.content.decode()
    assert "2 users online now" in html
    sections = dict(
        re.findall(r'<tbody class="presence-user" data-user-id="(\w+)">(.*?)</tbody>', html, re.S)
    )
    assert set(sections) == {str(alice.pk), str(bob.pk)}
    alice_html, bob_html = sections[str(alice.pk)], sections[str(bob.pk)]
    assert ">alice</a>" in alice_html
    assert re.search(r'class="presence-count">2<', alice_html)
    assert re.findall(r'data-connection-id="([\w-]+)"', alice_html) == [
        "alice-tab-1",
        "alice-tab-2",
    ]
    assert "web-1:101" in alice_html
    assert "web-2:202" in alice_html
    assert re.search(r'data-state="busy">busy &middot; busy &ldquo;Ward round&rdquo;<', alice_html)
    assert re.findall(r'class="presence-said">([^<]*)<', alice_html) == ["mobile &middot; in_call"]
    assert re.search(r'data-state="online">online<', bob_html)  # in his grace period
    # Bob is online (grace period) with no open connection: counted 0, lease shown closing.
    assert re.search(r'class="presence-count">0<', bob_html)
    assert re.findall(r'data-connection-id="([\w-]+)"', bob_html) == ["bob-laptop"]
    assert "offline grace period" in bob_html
    # Lease times (Redis TIME, or a monotonic clock in memory) are shown as real datetimes.
    times = [
        datetime.fromisoformat(t) for t in re.findall(r'<time datetime="([^"]+)"', alice_html)
    ]
    opened, renewed, expires = times[0], times[1], times[2]
    slack = timedelta(seconds=5)
    assert before - slack <= opened <= after + slack
    assert before - slack <= renewed <= after + slack
    ttl = timedelta(seconds=presence["CONNECTION_TTL"])
    assert before + ttl - slack <= expires <= after + ttl + slack
    assert re.search(r">\d+ s ago<", alice_html)
    assert re.search(r">in \d+ s<", alice_html)


def test_monitor_with_nobody_online(presence: dict[str, Any], client: Client, staff: Any) -> None:
    response = client.get(reverse(MONITOR))

    assert response.status_code == 200
    assert "Nobody is online." in response.content.decode()
    assert "0 users online now" in response.content.decode()


def test_monitor_pages_through_many_online_users(
    counting: dict[str, Any], client: Client, staff: Any
) -> None:
    users = make_users(*(f"u{i}" for i in range(12)))
    for user in users:
        user_online_service.add_user_connection(user.pk)
    ProjectUserAdmin.presence_monitor_per_page = 5
    try:
        first = client.get(reverse(MONITOR)).content.decode()
        last = client.get(reverse(MONITOR), {"p": 3}).content.decode()
    finally:
        del ProjectUserAdmin.presence_monitor_per_page

    assert "12 users online now" in first
    assert re.findall(r'data-user-id="(\d+)"', first) == [str(u.pk) for u in users[:5]]
    assert re.findall(r'data-user-id="(\d+)"', last) == [str(u.pk) for u in users[10:]]
    assert "page 1 of 3" in first


def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(
    presence: dict[str, Any], client: Client
) -> None:
    regular = User.objects.create_user("mallory", password="pw")
    for url in (reverse(MONITOR), reverse(SWEEP), reverse(DISCONNECT)):
        anonymous = client.get(url)
        assert anonymous.status_code == 302
        assert "/admin/login/" in anonymous["Location"]
    client.force_login(regular)
    for url in (reverse(MONITOR), reverse(CHANGELIST)):
        response = client.get(url)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
    response = client.post(reverse(SWEEP))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_staff_need_view_permission_to_watch_and_change_permission_to_act(
    presence: dict[str, Any], client: Client
) -> None:
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(clerk)
    assert client.get(reverse(MONITOR)).status_code == 403

    # (The suite does not recreate permissions after each flush: see conftest.py.)
    create_permissions(django_apps.get_app_config("testapp"), verbosity=0)
    clerk.user_permissions.add(Permission.objects.get(codename="view_user"))
    response = client.get(reverse(MONITOR))
    assert response.status_code == 200
    assert "Run a sweep now" not in response.content.decode()
    assert client.post(reverse(SWEEP)).status_code == 403
    assert client.post(reverse(DISCONNECT), {"user_id": clerk.pk}).status_code == 403


# -- actions ---------------------------------------------------------------------------------


def test_sweep_now_removes_expired_connections_and_takes_users_offline(
    presence: dict[str, Any], client: Client, staff: Any
) -> None:
    alice, bob = make_users("alice", "bob")
    # A lease of 0.3 s, as if alice's server had died right after she connected.
    change = async_to_sync(get_backend().add_connection)(str(alice.pk), "short", ttl=0.3)
    async_to_sync(user_online_service.apply_changes)([change])
    user_online_service.add_user_connection(bob.pk)  # a 30 s lease, still live
    time.sleep(0.6)  # let alice's lease run out (leases are timed by the backend's clock)
    alice.refresh_from_db()
    assert alice.is_online is True  # nobody swept yet

    response = client.post(reverse(SWEEP), follow=True)

    assert response.redirect_chain == [(reverse(MONITOR), 302)]
    assert "The sweep removed 1 expired connection." in response.content.decode()
    alice.refresh_from_db()
    assert alice.is_online is False
    assert user_online_service.is_user_online(alice.pk) is False
    assert user_online_service.is_user_online(bob.pk) is True
    again = client.post(reverse(SWEEP), follow=True)
    assert "The sweep removed 0 expired connections." in again.content.decode()


def test_reconcile_now_repairs_is_online_and_announces_it(
    presence: dict[str, Any], client: Client, staff: Any, signal_log: Any
) -> None:
    alice, bob = make_users("alice", "bob")
    user_online_service.add_user_connection(alice.pk)
    signal_log.clear()
    # The DB lost both writes: alice is online but marked offline; bob the reverse.
    User.objects.filter(pk=alice.pk).update(is_online=False)
    User.objects.filter(pk=bob.pk).update(is_online=True)
    assert 'id="presence-reconcile"' in client.get(reverse(MONITOR)).content.decode()

    response = client.post(reverse(RECONCILE), follow=True)

    assert response.redirect_chain == [(reverse(MONITOR), 302)]
    assert "Marked 1 users online and 1 offline." in response.content.decode()
    assert set(User.objects.filter(is_online=True).values_list("pk", flat=True)) == {alice.pk}
    assert sorted(signal_log.kinds()) == ["offline", "online"]
    assert client.get(reverse(RECONCILE)).status_code == 405


def test_actions_accept_only_post_with_a_csrf_token(presence: dict[str, Any], staff: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.get(reverse(SWEEP)).status_code == 405
    assert client.get(reverse(DISCONNECT)).status_code == 405
    assert client.post(reverse(SWEEP)).status_code == 403

    page = client.get(reverse(MONITOR))
    token = page.cookies["csrftoken"].value
    response = client.post(reverse(SWEEP), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302


async def test_disconnect_button_closes_every_socket_of_that_user(
    redis_layer: None, client: Client, staff: Any
) -> None:
    alice = await User.objects.acreate(username="alice")
    bob = await User.objects.acreate(username="bob")
    alice_tabs = [await open_socket(alice), await open_socket(alice)]
    bob_tab = await open_socket(bob)
    monitor = (await sync_to_async(client.get)(reverse(MONITOR))).content.decode()
    assert f'name="user_id" value="{alice.pk}"' in monitor

    response = await sync_to_async(client.post)(
        reverse(DISCONNECT), {"user_id": str(alice.pk)}, follow=True
    )

    assert response.redirect_chain == [(reverse(MONITOR), 302)]
    assert "Closed 2 connections of alice." in response.content.decode()
    for tab in alice_tabs:
        assert await tab.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": CLOSE_DISCONNECTED,
        }
    assert not await user_online_service.ais_user_online(alice.pk)
    await alice.arefresh_from_db()
    assert not alice.is_online
    # The monitor no longer lists alice; bob's socket still answers.
    assert f'data-user-id="{alice.pk}"' not in response.content.decode()
    assert f'data-user-id="{bob.pk}"' in response.content.decode()
    await bob_tab.send_to(text_data="still here")
    assert await bob_tab.receive_from() == "echo:still here"
    for tab in [*alice_tabs, bob_tab]:
        await tab.disconnect()


async def test_disconnect_action_on_the_changelist(
    redis_layer: None, client: Client, staff: Any
) -> None:
    alice = await User.objects.acreate(username="alice")
    bob = await User.objects.acreate(username="bob")
    carol = await User.objects.acreate(username="carol")
    tabs = [await open_socket(alice), await open_socket(bob), await open_socket(carol)]

    response = await sync_to_async(client.post)(
        reverse(CHANGELIST),
        {"action": "disconnect_users", "_selected_action": [alice.pk, bob.pk]},
        follow=True,
    )

    assert "Closed 2 connections." in response.content.decode()
    for tab in tabs[:2]:
        assert await tab.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": CLOSE_DISCONNECTED,
        }
    assert await tabs[2].receive_nothing(timeout=0.2)
    assert await user_online_service.aget_online_user_ids([alice.pk, bob.pk, carol.pk]) == {
        carol.pk
    }
    for tab in tabs:
        await tab.disconnect()


def test_disconnect_without_a_user_says_so(
    presence: dict[str, Any], client: Client, staff: Any
) -> None:
    response = client.post(reverse(DISCONNECT), {"user_id": ""}, follow=True)

    assert "No user to disconnect was given." in response.content.decode()
