"""The example's pages, token view, staff messaging and demo command."""

from __future__ import annotations

import io
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import AsyncClient, Client
from users.demo import DEMO_USERS, seed
from users.tokens import issue_access_token

from django_presence.middleware import JWTAuthMiddlewareStack, decode_token
from django_presence.routing import presence_urlpatterns
from django_presence.services import user_online_service

PASSWORDS = {username: password for username, password, *_ in DEMO_USERS}


def logged_in(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORDS[username])
    return client


@pytest.mark.django_db
def test_the_token_view_issues_a_short_lived_access_token_for_the_logged_in_user() -> None:
    users = seed()
    response = logged_in("patient").get("/token/")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    claims = decode_token(response.json()["token"])
    assert claims["user_id"] == users["patient"].pk
    assert claims["token_type"] == "access"
    assert claims["exp"] == response.json()["exp"]


@pytest.mark.django_db
def test_the_token_view_answers_401_to_a_logged_out_browser() -> None:
    response = Client().get("/token/")
    assert response.status_code == 401
    assert response.json() == {"error": "not_authenticated"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/messages/",
        "/notifications/",
        "/groups/",
        "/consultations/1/",
        "/consultations/1/waiting-room/",
    ],
)
@pytest.mark.parametrize("username", ["doctor", "patient"])
def test_every_page_renders_for_a_participant_and_loads_presence_js(
    url: str, username: str
) -> None:
    seed()
    response = logged_in(username).get(url)
    assert response.status_code == 200
    assert b"django_presence/presence.js" in response.content


@pytest.mark.django_db
def test_pages_need_a_login_and_the_room_its_participants() -> None:
    users = seed()
    assert Client().get("/").status_code == 302
    assert logged_in("admin").get(f"/consultations/{users['consultation'].pk}/").status_code == 404
    waiting_room = f"/consultations/{users['consultation'].pk}/waiting-room/"
    assert logged_in("admin").get(waiting_room).status_code == 404


@pytest.mark.django_db
def test_only_staff_send_notifications() -> None:
    users = seed()
    response = logged_in("doctor").post(
        "/notifications/", {"user_id": users["patient"].pk, "message": "hi", "action": "notify"}
    )
    assert response.status_code == 403


@pytest.mark.django_db(transaction=True)
async def test_a_staff_notification_and_broadcast_reach_the_users_socket() -> None:
    users = await database_sync_to_async(seed)()
    token, _ = issue_access_token(users["patient"])
    socket = WebsocketCommunicator(
        JWTAuthMiddlewareStack(URLRouter(presence_urlpatterns())),
        "/ws/user/",
        subprotocols=["access_token", token],
    )
    assert (await socket.connect())[0]
    admin = AsyncClient()
    assert await sync_to_async(admin.login)(username="admin", password=PASSWORDS["admin"])
    data = {"user_id": users["patient"].pk, "title": "Lab", "message": "Results in"}
    response = await admin.post("/notifications/", {**data, "action": "notify"})
    assert response.status_code == 302
    notification = await socket.receive_json_from(timeout=5)
    # Stored messages carry their place in the user's stream (docs/delivery.md).
    assert notification.pop("epoch")
    assert notification == {
        "type": "notification",
        "data": {"title": "Lab", "message": "Results in", "sent_by": "admin"},
        "stream": "user",
        "offset": 1,
    }
    response = await admin.post(
        "/notifications/", {"message": "Maintenance", "action": "broadcast"}
    )
    assert response.status_code == 302
    broadcast = await socket.receive_json_from(timeout=5)
    assert broadcast.pop("epoch")
    assert broadcast == {
        "type": "system_broadcast",
        "data": {"message": "Maintenance", "sent_by": "admin"},
        "stream": "broadcast",
        "offset": 1,
    }
    await socket.disconnect()


@pytest.mark.django_db
def test_the_demo_command_sets_up_prints_credentials_and_is_idempotent() -> None:
    out = io.StringIO()
    call_command("demo", "--no-serve", "--port", "8123", stdout=out)
    text = out.getvalue()
    for username, password, *_ in DEMO_USERS:
        assert f"{username:<8} / {password}" in text
    assert "http://127.0.0.1:8123/" in text
    assert "/consultations/1/" in text
    client = logged_in("doctor")
    assert client.get("/").status_code == 200
    # Running it again keeps everybody logged in: unchanged passwords are not rehashed.
    call_command("demo", "--no-serve", stdout=io.StringIO())
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_the_migrations_match_the_models() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_settings_switch_to_redis_when_redis_url_is_set(monkeypatch: Any) -> None:
    import importlib

    from example_project import settings as example_settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/3")
    monkeypatch.setenv("PRESENCE_OFFLINE_GRACE_PERIOD", "7")
    try:
        reloaded = importlib.reload(example_settings)
        layer = reloaded.CHANNEL_LAYERS["default"]
        assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
        host = layer["CONFIG"]["hosts"][0]
        assert host["address"] == "redis://127.0.0.1:6399/3"
        # Longer than channels_redis's 5 s blocking receive (redis-py 8 defaults to 5 s).
        assert host["socket_timeout"] > 5
        assert reloaded.DJANGO_PRESENCE["BACKEND"] == "django_presence.backends.redis.RedisBackend"
        assert reloaded.DJANGO_PRESENCE["REDIS_URL"] == "redis://127.0.0.1:6399/3"
        assert reloaded.DJANGO_PRESENCE["OFFLINE_GRACE_PERIOD"] == 7.0
    finally:
        monkeypatch.undo()
        importlib.reload(example_settings)


@pytest.fixture
def presence_cleanup() -> Any:
    """Statuses and server-set presences live in the backend: clear the demo users'."""
    touched: list[Any] = []
    yield touched
    for pk in touched:
        user_online_service.set_status(pk, "available")
        user_online_service.clear_presence(pk, name="rota")


@pytest.mark.django_db
def test_the_waiting_room_says_what_the_doctor_is_doing(presence_cleanup: Any) -> None:
    users = seed()
    doctor = users["doctor"]
    presence_cleanup.append(doctor.pk)
    url = f"/consultations/{users['consultation'].pk}/waiting-room/"
    patient = logged_in("patient")
    assert b'data-availability="offline"' in patient.get(url).content
    assert b"Doctor offline" in patient.get(url).content

    user_online_service.set_presence(doctor.pk, ttl=60, name="rota", device="web")
    assert b"Doctor available" in patient.get(url).content
    user_online_service.set_status(doctor.pk, "busy", text="In theatre")
    page = patient.get(url).content
    assert b"Doctor busy" in page
    assert b"In theatre" in page
    user_online_service.set_presence(
        doctor.pk, ttl=60, name="rota", device="web", activity="in_call"
    )
    assert b"Doctor in a consultation" in patient.get(url).content
    user_online_service.set_status(doctor.pk, "invisible")
    page = patient.get(url).content
    assert b"Doctor offline" in page
    assert b"In theatre" not in page


@pytest.mark.django_db
def test_the_dashboard_shows_the_status_the_backend_keeps(presence_cleanup: Any) -> None:
    users = seed()
    presence_cleanup.append(users["doctor"].pk)
    # Set while the doctor is offline: kept, and shown when they open the dashboard.
    user_online_service.set_status(users["doctor"].pk, "busy", text="On call", expires_in=600)
    page = logged_in("doctor").get("/").content.decode()
    assert 'id="availability" data-status="busy" data-text="On call"' in page
    assert 'data-expires-at="20' in page
    # The pages report activity four times per IDLE_AFTER (at most every 30 s).
    assert 'data-activity-interval="15000"' in page


@pytest.mark.django_db
def test_the_admin_monitor_lists_each_connections_device_and_activity(
    presence_cleanup: Any,
) -> None:
    users = seed()
    presence_cleanup.append(users["doctor"].pk)
    user_online_service.set_presence(
        users["doctor"].pk, ttl=60, name="rota", device="rota", activity="in_call"
    )
    page = logged_in("admin").get("/admin/users/user/presence/").content.decode()
    assert 'id="presence-availability"' in page
    assert '<td class="device">rota</td>' in page
    assert '<td class="activity">in_call</td>' in page


@pytest.mark.django_db
async def test_the_policy_shows_details_to_a_consultations_participants_only() -> None:
    from consultations.presence import CarePolicy

    users = await database_sync_to_async(seed)()
    doctor, patient, admin = users["doctor"], users["patient"], users["admin"]
    stranger = await get_user_model().objects.acreate(username="stranger")
    policy = CarePolicy()
    assert await policy.can_see_details(patient, doctor.pk)
    assert await policy.can_see_details(doctor, patient.pk)
    assert await policy.can_see_details(admin, doctor.pk)  # staff
    assert await policy.can_see_details(stranger, stranger.pk)  # oneself
    # Anyone may watch the doctor's state; only their patients learn what they are doing.
    assert await policy.can_watch(stranger, doctor.pk)
    assert not await policy.can_see_details(stranger, doctor.pk)
    assert not await policy.can_see_details(doctor, stranger.pk)
