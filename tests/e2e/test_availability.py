"""Availability in a real browser: away after idling, busy, invisible, in a consultation.

The doctor sets their status on the dashboard and marks themselves in a consultation on
the room page; the patient watches from the waiting room, which says "Doctor available",
"Doctor away", "Doctor busy", "Doctor offline" or "Doctor in a consultation". The idle
tests run the example with ``IDLE_AFTER`` = 1.5 s (the pages then report activity every
0.375 s) and a beat every 0.25 s, the others with the example's default (60 s), so that
nobody turns away during them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import HEARTBEAT_INTERVAL, ExampleServer, log_in, wait_connected

# The demo's seeded users, created in this order on an empty database.
DOCTOR, PATIENT, ADMIN = 1, 2, 3
CONSULTATION = 1

#: The shortened idle timings of the idle tests (a beat sweeps the idle users: a shorter
#: one shows away sooner after IDLE_AFTER).
IDLE_AFTER = 1.5
ACTIVITY_WRITE_INTERVAL = 0.2
IDLE_HEARTBEAT_INTERVAL = 0.25

pytestmark = pytest.mark.server


@pytest.fixture
def idle_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExampleServer]:
    """The example with users turning away after 1.5 s without input (on Redis if asked)."""
    on_redis = getattr(request, "param", "memory") == "redis"
    server = ExampleServer(
        tmp_path,
        redis_url=request.getfixturevalue("redis_url") if on_redis else None,
        extra_env={
            "PRESENCE_IDLE_AFTER": str(IDLE_AFTER),
            "PRESENCE_ACTIVITY_WRITE_INTERVAL": str(ACTIVITY_WRITE_INTERVAL),
            "PRESENCE_HEARTBEAT_INTERVAL": str(IDLE_HEARTBEAT_INTERVAL),
        },
    ).start()
    yield server
    server.stop()
    print(f"--- {server.name} log ---\n{server.log_tail()}")


def waiting_room(browser: Any, server: ExampleServer) -> Any:
    """The patient, logged in, in the waiting room, recording every state of the doctor."""
    patient = log_in(browser, server, "patient")
    patient.goto(f"{server.url}/consultations/{CONSULTATION}/waiting-room/")
    wait_connected(patient)
    patient.evaluate(
        "window.doctorStates = [];"
        "presenceClient.on('presence', (e) => {"
        f"  if (Number(e.user_id) === {DOCTOR}) window.doctorStates.push(e.state); }}); 0"
    )
    return patient


def wait_doctor(patient: Any, availability: str, timeout: float = 10.0) -> None:
    """Wait (at most ``timeout`` s) until the waiting room shows ``availability``."""
    patient.wait_for_selector(
        f'#doctor-availability[data-availability="{availability}"]', timeout=timeout * 1000
    )


def doctor_line(patient: Any) -> str:
    """What the waiting room says of the doctor."""
    return patient.text_content("#doctor-availability .label").strip()


def device_and_activity(admin: Any, user_id: int) -> list[tuple[str, str]]:
    """(device, activity) of each open connection of a user, in the admin's monitor."""
    rows = admin.eval_on_selector_all(
        f'tbody.presence-user-availability[data-user-id="{user_id}"] '
        "tr.presence-connection-data:not(.presence-closing)",
        "rows => rows.map(r => [r.querySelector('.device').textContent,"
        " r.querySelector('.activity').textContent])",
    )
    return [(device, activity) for device, activity in rows]


def set_status(page: Any, status: str, text: str = "", minutes: str = "") -> None:
    """Set the status from the dashboard's availability card, and wait for the reply."""
    page.select_option("#status-choice", status)
    page.fill("#status-text", text)
    page.fill("#status-minutes", minutes)
    page.click("#status-form button[type=submit]")
    page.wait_for_selector(f'#my-status[data-status="{status}"]', timeout=10_000)


@pytest.mark.parametrize("idle_server", ["memory", "redis"], indirect=True)
def test_the_waiting_room_sees_the_doctor_turn_away_and_come_back_after_input(
    fresh_contexts: Any, idle_server: ExampleServer
) -> None:
    patient = waiting_room(fresh_contexts, idle_server)
    wait_doctor(patient, "offline")
    doctor = log_in(fresh_contexts, idle_server, "doctor")
    wait_connected(doctor)
    connected_at = time.monotonic()
    # The page reports activity four times per IDLE_AFTER (users/context_processors.py).
    assert doctor.evaluate("presenceClient.options.activityInterval") == IDLE_AFTER * 1000 / 4
    wait_doctor(patient, "online")
    assert doctor_line(patient) == "Doctor available"

    # No input on the doctor's page: away once IDLE_AFTER passed (+ a heartbeat's sweep).
    wait_doctor(patient, "away", timeout=IDLE_AFTER + 8)
    away_after = time.monotonic() - connected_at
    assert doctor_line(patient) == "Doctor away"
    assert away_after >= IDLE_AFTER * 0.75, away_after  # not at once: after idling
    assert doctor.is_visible("#connection[data-state=open]")  # still connected
    # The doctor's own dashboard says what others see of them.
    doctor.wait_for_selector('#my-state[data-state="away"]', timeout=5000)

    # Input in the doctor's page: back at once (an away user's activity is written now).
    doctor.mouse.click(300, 40)
    doctor.keyboard.press("Shift")
    clicked_at = time.monotonic()
    wait_doctor(patient, "online", timeout=5)
    assert time.monotonic() - clicked_at < IDLE_AFTER, "came back late: not from the input"
    doctor.wait_for_selector('#my-state[data-state="online"]', timeout=5000)
    assert doctor_line(patient) == "Doctor available"

    # Input every 0.3 s keeps the doctor present for twice IDLE_AFTER.
    before = len(patient.evaluate("window.doctorStates"))
    until = time.monotonic() + 2 * IDLE_AFTER
    while time.monotonic() < until:
        doctor.keyboard.press("Shift")
        time.sleep(0.3)
    assert "away" not in patient.evaluate("window.doctorStates")[before:]
    assert patient.get_attribute("#doctor-availability", "data-availability") == "online"

    # The dashboards show it too: the doctor's row on the patient's dashboard turns away.
    patient.goto(idle_server.url + "/")
    wait_connected(patient)
    patient.wait_for_selector(
        f'tr.person[data-user-id="{DOCTOR}"][data-state="away"]', timeout=(IDLE_AFTER + 8) * 1000
    )
    assert patient.text_content(f'tr.person[data-user-id="{DOCTOR}"] .status') == "away"


def test_in_a_consultation_shows_in_the_waiting_room_keeps_the_doctor_present_and_in_the_admin(
    fresh_contexts: Any, idle_server: ExampleServer
) -> None:
    patient = waiting_room(fresh_contexts, idle_server)
    doctor = log_in(fresh_contexts, idle_server, "doctor")
    doctor.goto(f"{idle_server.url}/consultations/{CONSULTATION}/")
    wait_connected(doctor)
    wait_doctor(patient, "online")

    doctor.click("#in-call-toggle")
    wait_doctor(patient, "in_call", timeout=5)
    assert doctor_line(patient) == "Doctor in a consultation"
    assert doctor.get_attribute("#in-call-toggle", "data-in-call") == "true"
    # The patient sees the activity because the policy lets them (their doctor's details).
    assert patient.evaluate(f"presenceClient.getStatus({DOCTOR}).activities") == ["in_call"]

    # No input at all for well over IDLE_AFTER: in_call keeps the doctor from turning away.
    time.sleep(IDLE_AFTER + 6 * IDLE_HEARTBEAT_INTERVAL)
    assert patient.get_attribute("#doctor-availability", "data-availability") == "in_call"
    assert "away" not in patient.evaluate("window.doctorStates")

    # The staff's connection monitor lists the doctor's connections with device and activity.
    admin = log_in(fresh_contexts, idle_server, "admin")
    admin.goto(idle_server.url + "/admin/users/user/presence/")
    doctor_rows = f'tbody.presence-user-availability[data-user-id="{DOCTOR}"]'
    # The room page's ws/user/ connection (web, in_call; the device from ?device=web
    # survives the activity update) and the room's signalling socket (neither).
    assert ("web", "in_call") in device_and_activity(admin, DOCTOR)
    assert admin.get_attribute(doctor_rows, "data-state") == "online"
    assert device_and_activity(admin, PATIENT) == [("web", "waiting_room")]

    # The consultation ends: with no input since long, the doctor is away at once.
    doctor.click("#in-call-toggle")
    wait_doctor(patient, "away", timeout=5)
    assert doctor_line(patient) == "Doctor away"


def test_busy_with_a_text_and_an_expiry_set_by_the_doctor_shows_in_the_waiting_room(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    patient = waiting_room(fresh_contexts, example_server)
    doctor = log_in(fresh_contexts, example_server, "doctor")
    wait_connected(doctor)
    wait_doctor(patient, "online")
    assert doctor.get_attribute("#my-status", "data-status") == "available"

    set_status(doctor, "busy", "In theatre")
    assert "In theatre" in doctor.text_content("#my-status-details")
    wait_doctor(patient, "busy", timeout=5)
    assert doctor_line(patient) == "Doctor busy"
    doctor.wait_for_selector('#my-state[data-state="busy"]', timeout=5000)
    assert patient.text_content("#doctor-status-text") == "In theatre"
    assert patient.is_visible("#doctor-status-text")

    # The status is kept by the server: a reload shows it, and so does the waiting room.
    doctor.reload()
    wait_connected(doctor)
    assert doctor.get_attribute("#my-status", "data-status") == "busy"
    patient.reload()
    wait_connected(patient)
    assert patient.get_attribute("#doctor-availability", "data-availability") == "busy"
    assert patient.text_content("#doctor-status-text") == "In theatre"

    set_status(doctor, "available")
    wait_doctor(patient, "online", timeout=5)
    assert patient.is_hidden("#doctor-status-text")

    # Busy for 3 s (0.05 min): available again once it expires, on both pages.
    set_status(doctor, "busy", "Back in a moment", minutes="0.05")
    set_at = time.monotonic()
    assert "until" in doctor.text_content("#my-status-details")
    wait_doctor(patient, "busy", timeout=5)
    wait_doctor(patient, "online", timeout=3 + 8)
    assert time.monotonic() - set_at >= 2.5
    assert patient.is_hidden("#doctor-status-text")
    doctor.wait_for_selector('#my-status[data-status="available"]', timeout=5000)


def test_an_invisible_doctor_shows_offline_yet_stays_connected_and_notified(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    patient = waiting_room(fresh_contexts, example_server)
    doctor = log_in(fresh_contexts, example_server, "doctor")
    wait_connected(doctor)
    wait_doctor(patient, "online")

    set_status(doctor, "invisible")
    wait_doctor(patient, "offline", timeout=5)
    assert doctor_line(patient) == "Doctor offline"
    # Others see the doctor offline, and the doctor's page says so.
    doctor.wait_for_selector('#my-state[data-state="offline"]', timeout=5000)
    assert patient.evaluate(f"presenceClient.isOnline({DOCTOR})") is False
    hidden_from = len(patient.evaluate("window.doctorStates"))

    # The doctor moves to another page (a new connection), still invisible.
    doctor.goto(example_server.url + "/notifications/")
    wait_connected(doctor)
    admin = log_in(fresh_contexts, example_server, "admin")
    admin.goto(example_server.url + "/notifications/")
    admin.select_option("select[name=user_id]", str(DOCTOR))
    admin.fill("input[name=title]", "Lab")
    admin.fill("#notify-text", "Results for bed 4")
    admin.click("#send-notification")
    admin.wait_for_selector(".flash li.success")
    doctor.wait_for_selector("#notification-log li.notification", timeout=10_000)
    assert "Lab: Results for bed 4" in doctor.text_content("#notification-log")
    assert doctor.is_visible("#connection[data-state=open]")
    # Nobody else saw the doctor come back online meanwhile.
    time.sleep(4 * HEARTBEAT_INTERVAL)
    assert patient.get_attribute("#doctor-availability", "data-availability") == "offline"
    assert set(patient.evaluate("window.doctorStates")[hidden_from:]) <= {"offline"}

    doctor.goto(example_server.url + "/")
    wait_connected(doctor)
    assert doctor.get_attribute("#my-status", "data-status") == "invisible"
    set_status(doctor, "available")
    wait_doctor(patient, "online", timeout=5)
    assert doctor_line(patient) == "Doctor available"
