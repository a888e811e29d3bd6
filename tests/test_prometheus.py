"""django_presence.prometheus against the real prometheus_client, in one process and many."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import RequestFactory, override_settings
from prometheus_client import REGISTRY

from django_presence import metrics
from django_presence.metrics import COUNTERS
from django_presence.prometheus import counters, metrics_view, registry

ROOT = Path(__file__).resolve().parent.parent
HOOK = "django_presence.prometheus.hook"


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(f"django_presence_{name}_total", labels)
    return found if found is not None else 0.0


@pytest.fixture
def exporting() -> Any:
    with override_settings(DJANGO_PRESENCE={**settings.DJANGO_PRESENCE, "METRICS_HOOK": HOOK}):
        yield


def test_every_counter_is_a_prometheus_counter_with_its_known_labels() -> None:
    exported = counters()
    assert set(exported) == set(COUNTERS)
    for name, spec in COUNTERS.items():
        for label_value in spec.values:
            sample = REGISTRY.get_sample_value(
                f"django_presence_{name}_total", {spec.label or "": label_value}
            )
            assert sample is not None, (name, label_value)
        if spec.label is None:
            assert REGISTRY.get_sample_value(f"django_presence_{name}_total") is not None


def test_increments_reach_prometheus_through_the_hook(exporting: None) -> None:
    before = value("frames_rejected", reason="rate_limited"), value("connections_opened")
    metrics.increment("frames_rejected", reason="rate_limited")
    metrics.increment("connections_opened", 3)
    metrics.increment("frames_rejected", reason="my_code")  # a code of the project's own
    assert value("frames_rejected", reason="rate_limited") == before[0] + 1
    assert value("connections_opened") == before[1] + 3
    assert value("frames_rejected", reason="my_code") >= 1


def test_the_view_serves_the_text_exposition(exporting: None) -> None:
    metrics.increment("sweeps")
    response = metrics_view(RequestFactory().get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "# TYPE django_presence_sweeps_total counter" in body
    assert 'django_presence_transitions_total{transition="offline"}' in body
    assert registry() is REGISTRY


WORKER = """
import os, sys
import django
django.setup()
from django.conf import settings
from django.test import override_settings
from django_presence import metrics

presence = {**settings.DJANGO_PRESENCE, "METRICS_HOOK": "django_presence.prometheus.hook"}
with override_settings(DJANGO_PRESENCE=presence):
    for _ in range(int(sys.argv[1])):
        metrics.increment("connections_opened")
        metrics.increment("transitions", transition="online")
"""

SCRAPE = """
import django
django.setup()
from django.test import RequestFactory
from django_presence.prometheus import metrics_view

print(metrics_view(RequestFactory().get("/metrics")).content.decode())
"""


def run(tmp_path: Path, script: str, *args: str) -> str:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_multiprocess_mode_sums_the_counts_of_every_process(tmp_path: Path) -> None:
    # Two server processes count, and exit (a worker restarted): a scrape by a third
    # process, the one that answered the request, sees the sum.
    run(tmp_path, WORKER, "2")
    run(tmp_path, WORKER, "3")
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    body = run(tmp_path, SCRAPE)
    assert "django_presence_connections_opened_total 5.0" in body
    assert 'django_presence_transitions_total{transition="online"} 5.0' in body
    assert 'django_presence_transitions_total{transition="offline"} 0.0' in body
