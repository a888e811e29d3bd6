"""A small run of the benchmark harness (``benchmarks/run.py --smoke``).

It starts its own Redis and uvicorn servers, opens and closes real WebSocket connections,
and checks what a user would notice: every user transition produced exactly one online and
one offline event, nothing was lost or duplicated, and the ``is_online`` column agreed with
presence. Timing is never asserted: the numbers are for docs/performance.md, not for CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from django_presence.runtime import SWEEP_LIMIT

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON report of one smoke run (bare and package variants)."""
    out = tmp_path_factory.mktemp("bench") / "report.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return dict(json.loads(out.read_text()))


def exact(users: int) -> dict[str, int]:
    return {"total": users, "lost": 0, "duplicated": 0, "foreign": 0}


def test_every_socket_opened_and_closed(report: dict[str, Any]) -> None:
    params = report["parameters"]
    for variant in ("bare", "package"):
        (run,) = report["results"][variant]
        assert run["open"]["failed"] == 0, run["open"]["failures"]
        assert run["churn"]["failed"] == 0, run["churn"]["failures"]
        assert run["server_errors"] == 0, run["server_log"]
        assert run["open"]["rate"] > 0
        assert run["churn"]["rate"] > 0
    assert params["users"] * params["tabs"] > params["users"]  # several tabs per user


def test_one_online_and_one_offline_event_per_user_in_the_ramp(report: dict[str, Any]) -> None:
    users = report["parameters"]["users"]
    (run,) = report["results"]["package"]
    # Four tabs per user opened together and closed together: still one event each way.
    assert run["events_open"] == exact(users)
    assert run["events_close"] == exact(users)


def test_one_online_and_one_offline_event_per_churn_cycle(report: dict[str, Any]) -> None:
    cycles = report["parameters"]["cycles"]
    (run,) = report["results"]["package"]
    assert run["events_churn"] == {"online": exact(cycles), "offline": exact(cycles)}


def test_the_database_agrees_with_presence(report: dict[str, Any]) -> None:
    users = report["parameters"]["users"]
    (run,) = report["results"]["package"]
    assert run["db_online_after_open"] == users
    assert run["db_online_after_close"] == 0
    assert run["db_online_after_churn"] == 0
    # Within the documented bound of 1 s.
    for phase in ("open", "close", "churn"):
        assert run[f"db_lag_{phase}"] is not None


def test_the_bare_consumer_sends_no_presence_events(report: dict[str, Any]) -> None:
    (run,) = report["results"]["bare"]
    assert run["events_open"]["total"] == 0
    assert run["events_churn"]["online"]["total"] == 0
    assert run["db_online_after_open"] == 0


def test_the_report_names_versions_and_load(report: dict[str, Any]) -> None:
    assert report["versions"]["django-user-presence"]
    assert report["versions"]["redis-server"]
    assert len(report["machine_start"]["loadavg"]) == 3
    assert set(report["table"]["churn, cycles/s"]) == {"bare", "package"}


def test_the_delivery_benchmark_runs_and_replays_exactly(tmp_path: Path) -> None:
    """``benchmarks/delivery.py --smoke``: every measurement ran; the replay was exact.

    The script itself checks that each reconnect replayed exactly the missed offsets,
    recovered; timing is reported, never asserted.
    """
    out = tmp_path / "delivery.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "delivery.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["replay"]["missed"] == 300
    assert report["notify"]["service_wall_us"] > 0
    assert report["notify"]["raw_wall_us"] > 0
    assert report["broadcast"]["sockets"] == 100
    assert report["memory"]["bytes_per_message"] > report["memory"]["payload_bytes"] / 2


def test_the_scale_simulation_loads_what_it_was_asked(tmp_path: Path) -> None:
    """``benchmarks/scale.py --scale 0.002``: 2,000 connections of 600 users, 50 processes.

    Checks the report's structure and that Redis held exactly what was asked; timing and
    memory are reported, never asserted.
    """
    out = tmp_path / "scale.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scale.py"),
            "--scale",
            "0.002",
            "--budget",
            "60",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    params, loaded = report["parameters"], report["loaded"]
    assert (params["connections"], params["users"], params["processes"]) == (2000, 600, 50)
    assert params["sweep_limit"] == SWEEP_LIMIT
    assert loaded["connections"] == params["connections"]  # filed under the 50 servers
    assert loaded["users"] == params["users"]
    assert loaded["processes"] == params["processes"]
    assert loaded["servers_with_a_lease"] == loaded["servers_confirmed"] == 50
    assert report["load"]["first_renew_held"] == 0  # a first renew_server is never held
    assert report["load"]["stored"] == params["connections"]
    assert report["load"]["went_online"] == params["users"]
    # One hash per online user; the shared keys online (with each online user's seq), seq,
    # procs (the leases), pconf (the confirmed servers) and pname (their names); one
    # pc:<server> set per process. No leases (every connection is filed under a server),
    # no tseq/offline/closing/adue/retired (nobody went offline yet), no a:<uid> (no
    # data, no idle detection).
    assert loaded["keys"] == params["users"] + 5 + params["processes"]
    assert report["memory"]["delta"] > 0
    assert report["memory"]["bytes_per_connection"] > 0
    assert isinstance(report["memory"]["target_met"], bool)
    assert set(report["memory"]["memory_usage_by_key"]) == {
        "pc:* (all servers)",
        "procs",
        "online",
        "tseq",
        "offline",
        "u:* (estimated)",
    }
    assert report["memory"]["memory_usage_by_key"]["pc:* (all servers)"] > 0
    beat = report["beat"]
    assert beat["connections"] == params["connections_per_process"] == 40
    assert beat["held"] is True  # the lease was held and confirmed at every beat
    assert beat["requests"] == 1
    assert beat["swept"] == 0
    assert beat["restored"] == 0  # filing its connections again afterwards stored none
    assert beat["inner_by_command"]["zadd"] == 1  # its lease, not one per connection
    sizes = beat["sizes"]
    assert set(sizes) == {"10", "2000"}  # 10,000 and 100,000 capped at N
    for size, s in sizes.items():
        assert s["requests"] == 1
        assert s["held"] is True
        assert s["first_renew_held"] is False
        assert s["stored"] == s["filed"] == int(size)
    # O(1): a beat runs the same commands whatever its process holds.
    assert sizes["10"]["inner_commands"] == sizes["2000"]["inner_commands"]
    assert sizes["10"]["inner_by_command"] == sizes["2000"]["inner_by_command"]
    assert beat["inner_commands"] == sizes["10"]["inner_commands"]
    dead = report["dead_sweep"]
    assert dead["held_at_last_renewal"] is True
    assert dead["removed"] == dead["connections"] == 40
    # Each of its users also has connections on other processes: nobody went offline.
    assert dead["users_offline"] == 0
    assert dead["complete"] is True
    assert dead["filed_left"] == params["connections"] - 40
    assert dead["dead_filing_exists"] is False
    assert dead["retired_left"] == 0
    assert dead["stopped_with_more"] is False
    assert 1 <= dead["calls"] <= 3  # bounded: 40 connections, limit 250
    restore = report["restore"]
    assert restore["held"] is False  # swept: its lease was lost
    assert restore["restored"] == restore["connections"] == 40  # all stored again
    assert restore["calls"] == -(-40 // restore["pairs_per_call"])
    reads = report["reads"]
    assert reads["online_user_ids"]["ids"] == 10_000
    assert reads["online_user_ids"]["online"] == min(5000, params["users"])
    assert reads["presence_snapshot"]["ids"] == 600
    assert reads["all_online_user_ids"]["online"] == params["users"]
    for name in ("online_user_ids", "presence_snapshot", "all_online_user_ids"):
        assert reads[name]["wall_ms_median"] > 0
    assert report["versions"]["redis-server"]
    assert len(report["machine"]["loadavg_end"]) == 3


def test_the_availability_benchmark_runs_and_counts_requests(tmp_path: Path) -> None:
    """``benchmarks/availability.py --smoke``: 200 users, every measurement ran.

    Request counts are not timings: idle users (about to turn away, or away) cost a beat
    exactly the requests of idle detection off. Timing and memory are reported, never
    asserted.
    """
    out = tmp_path / "availability.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "availability.py"),
            "--smoke",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    users = report["parameters"]["users"]
    update = report["update"]["10"]
    assert update["announced"] is True
    assert update["service_wall_us"] > 0
    assert update["raw_wall_us"] > 0
    beats = report["beats"]
    off = beats["IDLE_AFTER=0"]
    assert off["connections"] == users
    assert off["states"] == {"online": users}
    assert beats["IDLE_AFTER=300, all idle"]["states"] == {"online": users}
    assert beats["IDLE_AFTER=300, all idle and away"]["states"] == {"away": users}
    for name in ("IDLE_AFTER=300, all idle", "IDLE_AFTER=300, all idle and away"):
        assert beats[name]["requests_per_beat"] == off["requests_per_beat"]
        assert beats[name]["requests_per_beat_max"] == off["requests_per_beat_max"]
    active = next(v for k, v in beats.items() if k.endswith(" active"))
    assert active["first_activity_writes"] == report["parameters"]["active"]
    assert report["sweep"]["due"]["away"] == report["sweep"]["turning_away"]
    assert report["sweep"]["nothing due"]["away"] == 0
    configs = report["memory"]["configs"]
    assert len(configs) == 4
    assert all(c["bytes_per_user"] > 0 for c in configs.values())
    assert isinstance(report["targets"]["idle_no_more_requests_met"], bool)
