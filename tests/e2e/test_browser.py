"""The example project in a real browser: presence, messaging, signalling, restarts, replay.

Two (or three) browser contexts are separate people with their own cookies, logged in as
the demo users against the example project served by uvicorn (``manage.py demo``). The
server runs with a 2 s offline grace period and a 0.5 s heartbeat (see harness.py).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    ExampleServer,
    log_in,
    person_row,
    wait_connected,
)

ROOT = Path(__file__).resolve().parent.parent.parent
#: The docs' screenshot; rewritten only with PRESENCE_UPDATE_SCREENSHOTS=1, so that a test
#: run leaves a checkout unmodified (it goes to a temporary file otherwise).
SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"

# The demo's seeded users, created in this order on an empty database.
DOCTOR, PATIENT, ADMIN = 1, 2, 3

pytestmark = pytest.mark.server


def activity(page: Any) -> list[str]:
    """The dashboard's activity log, oldest first, without the times."""
    texts = page.eval_on_selector_all(
        "#activity li", "items => items.map(li => li.childNodes[1].textContent)"
    )
    return list(reversed(texts))


def test_sees_another_user_come_online_and_go_offline_after_the_grace_period(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    doctor = log_in(fresh_contexts, example_server, "doctor")
    wait_connected(doctor)
    doctor.wait_for_selector(person_row(doctor, DOCTOR, online=True))
    doctor.wait_for_selector(person_row(doctor, PATIENT, online=False))

    patient = log_in(fresh_contexts, example_server, "patient")
    wait_connected(patient)
    doctor.wait_for_selector(person_row(doctor, PATIENT, online=True))
    assert doctor.text_content(f'tr[data-user-id="{PATIENT}"] .status') == "online"

    # Moving to another page closes the socket and opens a new one within the grace
    # period: no flicker, no offline event.
    patient.goto(example_server.url + "/messages/")
    wait_connected(patient)
    time.sleep(GRACE_PERIOD + 4 * HEARTBEAT_INTERVAL)
    assert activity(doctor) == ["patient came online"]
    assert doctor.is_visible(person_row(doctor, PATIENT, online=True))

    # Closing the last tab: offline once the grace period is over, with a last-seen time.
    closed_at = time.monotonic()
    patient.context.close()
    doctor.wait_for_selector(person_row(doctor, PATIENT, online=False))
    assert time.monotonic() - closed_at >= GRACE_PERIOD * 0.9
    assert activity(doctor) == ["patient came online", "patient went offline"]
    last_seen = doctor.text_content(f'tr[data-user-id="{PATIENT}"] .last-seen')
    assert last_seen not in ("never", "now", "")


def test_receives_direct_messages_notifications_and_broadcasts(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    patient = log_in(fresh_contexts, example_server, "patient")
    wait_connected(patient)
    # A second tab of the same person (same cookies) gets everything too.
    patient_tab2 = patient.context.new_page()
    patient_tab2.goto(example_server.url + "/")
    wait_connected(patient_tab2)

    doctor = log_in(fresh_contexts, example_server, "doctor")
    doctor.goto(example_server.url + "/messages/")
    wait_connected(doctor)
    doctor.select_option("#dm-target", str(PATIENT))
    doctor.fill("#dm-text", "Your results are in")
    doctor.click("#dm-form button[type=submit]")
    # The sender's request is acknowledged (request/response with ids).
    doctor.wait_for_selector("#dm-log li.sent")
    for tab in (patient, patient_tab2):
        tab.wait_for_selector("#activity li.dm")
        assert "From doctor: Your results are in" in tab.text_content("#activity")

    admin = log_in(fresh_contexts, example_server, "admin")
    admin.goto(example_server.url + "/notifications/")
    admin.select_option("select[name=user_id]", str(PATIENT))
    admin.fill("input[name=title]", "Appointment")
    admin.fill("#notify-text", "Tomorrow at 9:00")
    admin.click("#send-notification")
    admin.wait_for_selector(".flash li.success")
    for tab in (patient, patient_tab2):
        tab.wait_for_selector("#activity li.notification")
        assert "Notification · Appointment: Tomorrow at 9:00" in tab.text_content("#activity")

    admin.fill("#notify-text", "Maintenance tonight at 22:00")
    admin.click("#send-broadcast")
    admin.wait_for_selector(".flash li.success")
    for tab in (patient, patient_tab2, doctor):
        tab.wait_for_selector("li.broadcast")
        assert "System broadcast: Maintenance tonight at 22:00" in tab.text_content("li.broadcast")

    # A non-staff user's socket broadcast is refused with a "forbidden" error.
    code = patient.evaluate(
        "presenceClient.broadcast('spam').then(() => 'sent', (error) => error.code)"
    )
    assert code == "forbidden"

    # The dashboard as a person sees it, for the docs.
    patient.goto(example_server.url + "/")
    wait_connected(patient)
    patient.wait_for_selector(person_row(patient, DOCTOR, online=True))
    patient.wait_for_selector(person_row(patient, ADMIN, online=True))
    doctor.goto(example_server.url + "/")
    wait_connected(doctor)
    doctor.wait_for_selector(person_row(doctor, PATIENT, online=True))
    admin.context.close()
    doctor.wait_for_selector(person_row(doctor, ADMIN, online=False))
    sent = patient.evaluate(
        "presenceClient.sendDirectMessage(1, 'Thank you, see you tomorrow').then(() => 'sent')"
    )
    assert sent == "sent"
    doctor.wait_for_selector("#activity li.dm")
    target = SCREENSHOT if os.environ.get("PRESENCE_UPDATE_SCREENSHOTS") == "1" else None
    with tempfile.TemporaryDirectory() as tmp:
        path = target or Path(tmp) / "dashboard.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        doctor.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000  # a rendered page, not an empty image


def test_consultation_signalling_completes_between_the_two_participants(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    room_url = example_server.url + "/consultations/1/"
    doctor = log_in(fresh_contexts, example_server, "doctor")
    doctor.goto(room_url)
    doctor.wait_for_selector("#peer-presence[data-online=false]")
    patient = log_in(fresh_contexts, example_server, "patient")
    patient.goto(room_url)

    # Each sees the other online (presence) and in the room (the signalling socket).
    doctor.wait_for_selector("#peer-presence[data-online=true]")
    patient.wait_for_selector("#peer-presence[data-online=true]")
    doctor.wait_for_function("document.getElementById('peer-in-room').textContent === 'yes'")
    patient.wait_for_function("document.getElementById('peer-in-room').textContent === 'yes'")

    doctor.click("#start-call:not([disabled])")
    for page in (doctor, patient):
        page.wait_for_function(
            "document.getElementById('signalling-state').textContent === 'complete'"
        )
    assert "Received an answer from patient" in doctor.text_content("#signal-log")
    assert "Received an offer from doctor" in patient.text_content("#signal-log")
    # No camera, yet the two browsers connected peer to peer through the relayed SDP.
    for page in (doctor, patient):
        page.wait_for_selector("#signal-log li:has-text('Data channel open')")

    # Anyone else is refused: the page is a 404, and the socket never opens.
    admin = log_in(fresh_contexts, example_server, "admin")
    response = admin.goto(room_url)
    assert response is not None
    assert response.status == 404
    admin.goto(example_server.url + "/")
    outcome = admin.evaluate(
        """async () => {
            const token = (await (await fetch('/token/')).json()).token;
            return await new Promise((resolve) => {
                const ws = new WebSocket(
                    'ws://' + location.host + '/ws/consultation/1/', ['access_token', token]);
                ws.onopen = () => resolve('opened');
                ws.onclose = (event) => resolve('closed ' + event.code);
            });
        }"""
    )
    assert outcome == "closed 1006"
    assert "Data channel open" in doctor.text_content("#signal-log")


def test_pages_reconnect_and_resubscribe_after_a_server_restart(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    doctor = log_in(fresh_contexts, example_server, "doctor")
    wait_connected(doctor)
    doctor.wait_for_selector(person_row(doctor, PATIENT, online=False))

    doctor.evaluate("window.closes = 0; presenceClient.on('close', () => window.closes++); 0")
    example_server.stop()
    doctor.wait_for_function("window.closes > 0")
    assert doctor.get_attribute("#connection", "data-state") != "open"
    example_server.start()
    # The same page, never reloaded, reconnects with a fresh token...
    wait_connected(doctor)
    doctor.wait_for_selector(person_row(doctor, DOCTOR, online=True))
    # ...and subscribed again: it sees the patient come online on the new server.
    patient = log_in(fresh_contexts, example_server, "patient")
    wait_connected(patient)
    doctor.wait_for_selector(person_row(doctor, PATIENT, online=True))
    assert doctor.evaluate("presenceClient.isOnline(2)") is True


def test_two_server_processes_on_redis_share_presence_and_messages(
    fresh_contexts: Any, tmp_path: Path, redis_url: str
) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    database = tmp_path / "shared.sqlite3"
    first = ExampleServer(
        tmp_path, name="first", database=database, redis_url=redis_url, prefix=prefix
    )
    second = ExampleServer(
        tmp_path, name="second", database=database, redis_url=redis_url, prefix=prefix
    )
    first.start()
    try:
        second.start()
        try:
            doctor = log_in(fresh_contexts, first, "doctor")
            wait_connected(doctor)
            doctor.wait_for_selector(person_row(doctor, PATIENT, online=False))
            patient = log_in(fresh_contexts, second, "patient")
            wait_connected(patient)
            doctor.wait_for_selector(person_row(doctor, PATIENT, online=True))

            sent = patient.evaluate(
                "presenceClient.sendDirectMessage(1, 'across servers').then(() => 'sent')"
            )
            assert sent == "sent"
            doctor.wait_for_selector("#activity li.dm")
            assert "From patient: across servers" in doctor.text_content("#activity")

            patient.context.close()
            doctor.wait_for_selector(person_row(doctor, PATIENT, online=False))
        finally:
            second.stop()
            print(f"--- second log ---\n{second.log_tail()}")
    finally:
        first.stop()
        print(f"--- first log ---\n{first.log_tail()}")


def test_groups_show_who_is_in_them_and_carry_messages(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    pages = []
    for username in ("doctor", "patient"):
        page = log_in(fresh_contexts, example_server, username)
        page.goto(example_server.url + "/groups/")
        wait_connected(page)
        page.fill("#group-name", "cardiology")
        page.click("#join-form button[type=submit]")
        pages.append(page)
    doctor, patient = pages
    members = 'article[data-group="cardiology"] .members'
    doctor.wait_for_function(
        f"document.querySelector('{members}').textContent === 'doctor, patient'"
    )
    patient.wait_for_function(
        f"document.querySelector('{members}').textContent === 'doctor, patient'"
    )
    patient.fill('article[data-group="cardiology"] .group-text', "Ward round at 10")
    patient.click('article[data-group="cardiology"] .group-form button')
    doctor.wait_for_selector('article[data-group="cardiology"] li.group')
    assert "patient: Ward round at 10" in doctor.text_content(
        'article[data-group="cardiology"] .group-log'
    )
    # Leaving shows at once in the other member's list.
    patient.click('article[data-group="cardiology"] .leave')
    doctor.wait_for_function(f"document.querySelector('{members}').textContent === 'doctor'")


def notifications_shown(page: Any) -> list[str]:
    """The notifications the dashboard lists, oldest first."""
    return [text for text in activity(page) if text.startswith("Notification · ")]


def send_notification(admin: Any, user_id: int, message: str) -> None:
    """Send a notification from the staff page (``admin`` is on /notifications/)."""
    admin.select_option("select[name=user_id]", str(user_id))
    admin.fill("input[name=title]", "Lab")
    admin.fill("#notify-text", message)
    admin.click("#send-notification")
    admin.wait_for_selector(".flash li.success")


def test_notifications_sent_while_the_page_is_cut_off_show_once_in_order(
    fresh_contexts: Any, tmp_path: Path, redis_url: str
) -> None:
    """The patient's server is killed; 5 notifications go out through the other one."""
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    database = tmp_path / "shared.sqlite3"
    first = ExampleServer(
        tmp_path, name="first", database=database, redis_url=redis_url, prefix=prefix
    )
    second = ExampleServer(
        tmp_path, name="second", database=database, redis_url=redis_url, prefix=prefix
    )
    first.start()
    try:
        second.start()
        try:
            patient = log_in(fresh_contexts, first, "patient")
            wait_connected(patient)
            patient.evaluate(
                "window.closes = 0; window.recovered = []; window.lost = [];"
                "presenceClient.on('close', () => window.closes++);"
                "presenceClient.on('recovered', (e) => window.recovered.push(e));"
                "presenceClient.on('discontinuity', (e) => window.lost.push(e)); 0"
            )
            admin = log_in(fresh_contexts, second, "admin")
            admin.goto(second.url + "/notifications/")
            send_notification(admin, PATIENT, "before the cut")
            patient.wait_for_selector("#activity li.notification")

            first.kill()
            cut_at = time.monotonic()
            patient.wait_for_function("window.closes > 0")
            for i in range(1, 6):
                send_notification(admin, PATIENT, f"result {i}")
            assert notifications_shown(patient) == ["Notification · Lab: before the cut"]
            first.start()
            restarted_at = time.monotonic()
            wait_connected(patient)
            expected = ["Notification · Lab: before the cut"] + [
                f"Notification · Lab: result {i}" for i in range(1, 6)
            ]
            patient.wait_for_function(
                "document.querySelectorAll('#activity li.notification').length >= 6"
            )
            shown_after, since_restart = time.monotonic() - cut_at, time.monotonic() - restarted_at
            # A few heartbeats more: no duplicate comes late.
            time.sleep(4 * HEARTBEAT_INTERVAL)
            assert notifications_shown(patient) == expected
            recovered = patient.evaluate("window.recovered")
            assert {"stream": "user", "replayed": 5} in [
                {"stream": r["stream"], "replayed": r["replayed"]} for r in recovered
            ], recovered
            assert patient.evaluate("window.lost") == []
            assert patient.is_hidden("#delivery-notice")
            print(
                f"\n[cut off] all 6 shown {shown_after:.2f} s after the kill, "
                f"{since_restart:.2f} s after the server listened again (page backoff included)"
            )
        finally:
            second.stop()
            print(f"--- second log ---\n{second.log_tail()}")
    finally:
        first.stop()
        print(f"--- first log ---\n{first.log_tail()}")


def test_the_page_says_when_messages_were_lost(
    fresh_contexts: Any, example_server: ExampleServer
) -> None:
    """The memory backend loses the history with the server: the page shows a notice."""
    patient = log_in(fresh_contexts, example_server, "patient")
    wait_connected(patient)
    admin = log_in(fresh_contexts, example_server, "admin")
    admin.goto(example_server.url + "/notifications/")
    send_notification(admin, PATIENT, "seen")
    patient.wait_for_selector("#activity li.notification")
    assert patient.is_hidden("#delivery-notice")

    patient.evaluate(
        "window.closes = 0; window.lost = [];"
        "presenceClient.on('close', () => window.closes++);"
        "presenceClient.on('discontinuity', (e) => window.lost.push(e.stream)); 0"
    )
    example_server.stop()
    patient.wait_for_function("window.closes > 0")
    example_server.start()
    wait_connected(patient)
    patient.wait_for_selector("#delivery-notice", state="visible")
    assert "Some messages were lost" in patient.text_content("#delivery-notice")
    # Both of the page's streams lived in the old server's memory.
    assert sorted(patient.evaluate("window.lost")) == ["broadcast", "user"]
    assert notifications_shown(patient) == ["Notification · Lab: seen"]
