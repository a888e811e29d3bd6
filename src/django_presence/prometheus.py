"""The package's counters as Prometheus counters: ``django-user-presence[prometheus]``.

Name the hook in the settings, and serve the exposition with the view::

    DJANGO_PRESENCE = {"METRICS_HOOK": "django_presence.prometheus.hook"}

    # urls.py
    from django_presence.prometheus import metrics_view
    urlpatterns += [path("metrics/presence", metrics_view)]

Each counter of :data:`django_presence.metrics.COUNTERS` becomes the Prometheus counter
``django_presence_<name>_total``, with its label, if it has one, and with every known label
value present from the first increment on (a rate over a series that does not exist yet
is no rate at all).

Several server processes (uvicorn ``--workers``, gunicorn): set the environment variable
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory, the same for every process, before
they start. ``prometheus_client`` then keeps each process's counts in a file there, and
:func:`metrics_view` (or :func:`registry`, for your own exporter) sums every process's,
dead ones included, so a counter never drops when a worker restarts. Empty the directory
when the whole server restarts. Without the variable, each process exports its own
counts, which is right for one process only.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .metrics import COUNTERS

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "django_presence.prometheus needs prometheus_client: "
        "pip install 'django-user-presence[prometheus]'"
    ) from e

#: The prefix of every metric this module exports.
NAMESPACE = "django_presence"

_lock = threading.Lock()
_counters: dict[str, Any] = {}


def counters() -> dict[str, Any]:
    """The Prometheus counters, by package counter name, created on first use.

    They live in ``prometheus_client``'s default registry (``REGISTRY``), where a project
    that already exports other metrics finds them too.
    """
    if len(_counters) == len(COUNTERS):
        return _counters
    with _lock:
        for name, spec in COUNTERS.items():
            if name in _counters:
                continue
            counter = Counter(
                f"{NAMESPACE}_{name}",
                spec.help,
                labelnames=[spec.label] if spec.label else [],
            )
            for value in spec.values:
                counter.labels(value)  # present at 0 from the start
            _counters[name] = counter
    return _counters


def hook(name: str, value: int, labels: dict[str, str]) -> None:
    """``METRICS_HOOK``: add ``value`` to the Prometheus counter of ``name``."""
    counter = counters().get(name)
    if counter is None:
        return
    if labels:
        counter.labels(*labels.values()).inc(value)
    else:
        counter.inc(value)


def multiprocess() -> bool:
    """Whether ``prometheus_client`` runs in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def registry() -> Any:
    """The registry to expose: every process's counts in multiprocess mode, else this one's."""
    if multiprocess():
        collected = CollectorRegistry()
        collector: Any = MultiProcessCollector  # untyped in some prometheus_client versions
        collector(collected)
        return collected
    counters()
    return prometheus_client.REGISTRY


def metrics_view(request: Any) -> Any:
    """A Django view of the Prometheus text exposition (protect it: it is not for users)."""
    from django.http import HttpResponse

    return HttpResponse(
        prometheus_client.generate_latest(registry()),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
