"""Counters of what presence does in this process, and a hook to export them.

Every event worth graphing (a connection opened, a user going offline, a frame rejected,
a sweep) increments a counter here. There are two ways to read them:

- :func:`snapshot` (or :func:`samples`): the cumulative counts since this process
  started, kept as plain integers under one lock. A ``/metrics`` view of the project can
  render them. They are *per process*: each server process (each uvicorn or daphne
  worker) has its own, and a management command sees only its own (zeros).
- ``DJANGO_PRESENCE["METRICS_HOOK"]``: a callable, or the dotted path of one, called on
  every increment as ``hook(name, value, labels)``, to forward the counts to Prometheus,
  StatsD, Datadog or OpenTelemetry.

Why a setting and not a Django signal: a metrics sink is one per project, like a logging
handler; it sits on the hot path (every inbound frame), where a signal's dispatch (weak
references, per-sender caches, a list of responses) costs more than a plain call; and a
signal receiver that raises propagates to the sender, whereas a metrics exporter must
never break presence. When no hook is configured an increment costs a dict lookup, an
integer addition under a lock and one comparison of a module attribute with ``None``.

The hook runs inline, in the thread and event loop that counted the event: it must be
quick and never block (incrementing a ``prometheus_client`` counter or sending a UDP
datagram is fine; a database query or an HTTP request is not). A hook that raises is
counted in ``hook_errors`` and logged on the ``django_presence.metrics`` logger (the first
failure with its traceback, then at most one summary a minute); presence carries on.

Counter names are stable and listed in :data:`COUNTERS`; ``labels`` is a new dict each
call, with at most one key (``transition``, ``reason`` or ``operation``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import SETTING_NAME, presence_settings, valid_setting
from .exceptions import PresenceImproperlyConfigured

logger = logging.getLogger(__name__)

#: The signature of ``METRICS_HOOK``: ``hook(name, value, labels)``.
MetricsHook = Callable[[str, int, dict[str, str]], object]


@dataclass(frozen=True)
class CounterSpec:
    """One counter: what it counts, and its label (name and known values), if any."""

    help: str
    label: str | None = None
    #: Label values shown by :func:`snapshot` even while still 0; others appear when used.
    values: tuple[str, ...] = ()


#: Every counter the package increments, by name.
COUNTERS: dict[str, CounterSpec] = {
    "connections_opened": CounterSpec(
        "WebSocket connections registered (accepted, with an authenticated user)."
    ),
    "connections_refused": CounterSpec(
        "Connections refused (code 4009) because their user held MAX_CONNECTIONS_PER_USER "
        "open connections, or this process MAX_CONNECTIONS_PER_PROCESS.",
        label="reason",
        values=("user", "process"),
    ),
    "connections_closed": CounterSpec(
        "Registered connections that ended, however they ended. opened - closed is the "
        "number this process holds open."
    ),
    "transitions": CounterSpec(
        "Users who came online or went offline, counted by the process that applied the "
        "transition's side effects.",
        label="transition",
        values=("online", "offline"),
    ),
    "sweeps": CounterSpec(
        "Sweeps of expired leases this process ran (a server's beat sweeps only while it "
        "holds the sweep lock, so the sum over servers is about one per interval; a clean "
        "close adds a sweep at the end of its grace period, shared per 0.25 s of expiries)."
    ),
    "connections_swept": CounterSpec(
        "Expired leases removed by this process's sweeps: connections of crashed "
        "processes, and closing leases whose grace period ended."
    ),
    "connections_restored": CounterSpec(
        "Open connections of this process that the backend had lost (a Redis restart "
        "without persistence) and that a heartbeat registered again."
    ),
    "heartbeat_failures": CounterSpec(
        "Heartbeats that failed (the backend unreachable...); each is retried one interval later."
    ),
    "connection_errors": CounterSpec(
        "Backend calls of a connecting or disconnecting socket that failed. A failed "
        "register is retried by the next heartbeat; a failed unregister leaves a lease "
        "that expires by itself.",
        label="operation",
        values=("register", "unregister"),
    ),
    "frames_rejected": CounterSpec(
        "Inbound frames of the ws/user/ consumer answered with an error frame, by its "
        "code (docs/protocol.md).",
        label="reason",
        values=(
            "rate_limited",
            "too_large",
            "invalid_json",
            "invalid_payload",
            "unknown_type",
            "forbidden",
            "not_found",
            "server_error",
        ),
    ),
    "tokens_rejected": CounterSpec(
        "WebSocket handshakes refused (code 4003) by JWTAuthMiddleware, by why.",
        label="reason",
        values=("expired", "invalid", "not_access", "unknown_user", "inactive_user"),
    ),
    "origins_refused": CounterSpec(
        "WebSocket handshakes refused (HTTP 403) by django_presence.middleware."
        "OriginValidator because their Origin is not allowed."
    ),
    "channel_layer_failures": CounterSpec(
        "Failed channel-layer receives of ws/user/ connections (each is retried with "
        "backoff, up to 5 s apart). Alert on a rate above zero."
    ),
    "flood_closes": CounterSpec(
        "Connections closed (code 4008) for sending on after being rate limited."
    ),
    "hook_errors": CounterSpec("Calls of METRICS_HOOK that raised."),
}


class Sample(NamedTuple):
    """One counter's value, for exporters: ``labels`` is ``{}`` for unlabelled ones."""

    name: str
    labels: dict[str, str]
    value: int


_lock = threading.Lock()
_counts: dict[tuple[str, str], int] = {}  # (name, label value or "") -> count

_UNRESOLVED: Any = object()
# The hook: _UNRESOLVED until the first increment reads the setting, then a callable or
# None. Reset whenever Django's settings change.
_hook: Any = _UNRESOLVED

# Throttling of the hook's failure logs.
_FAILURE_LOG_INTERVAL = 60.0
_failure_lock = threading.Lock()
_failures_unlogged = 0
_last_failure_log = float("-inf")


def increment(name: str, value: int = 1, **labels: str) -> None:
    """Add ``value`` to counter ``name`` (one of :data:`COUNTERS`) and call the hook.

    Called by the package; a project may call it too, with the package's names only.
    Raises :class:`ValueError` for an unknown name, wrong labels or a negative value.
    """
    spec = COUNTERS.get(name)
    if spec is None:
        raise ValueError(f"Unknown presence counter {name!r}; see django_presence.metrics.")
    if spec.label is None:
        if labels:
            raise ValueError(f"Counter {name!r} takes no labels, got {sorted(labels)}.")
        key = (name, "")
    else:
        if len(labels) != 1 or spec.label not in labels:
            raise ValueError(
                f"Counter {name!r} takes exactly the label {spec.label!r}, got {sorted(labels)}."
            )
        key = (name, str(labels[spec.label]))
    if type(value) is not int or value != 1:  # the common case skips the checks
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"A counter grows by a non-negative int, got {value!r}.")
        if value == 0:
            return
    with _lock:
        _counts[key] = _counts.get(key, 0) + value
    hook = _hook
    if hook is None:
        return
    if hook is _UNRESOLVED:
        hook = _resolve_hook()
        if hook is None:
            return
    try:
        hook(name, value, {spec.label: key[1]} if spec.label else {})
    except Exception as error:
        # A project's exporter: whatever it raises, presence must carry on.
        _hook_failed(name, error)


def snapshot() -> dict[str, int]:
    """This process's counters, keyed ``name`` or ``name{label="value"}``.

    Every unlabelled counter and every known label value is present, 0 until counted.
    The keys read like Prometheus series, and the dict serialises to JSON as it is.
    """
    return {
        name if not labels else f"{name}{{{_label_text(labels)}}}": value
        for name, labels, value in samples()
    }


def samples() -> list[Sample]:
    """This process's counters as :class:`Sample` tuples, in :data:`COUNTERS` order."""
    with _lock:
        counts = dict(_counts)
    result = []
    for name, spec in COUNTERS.items():
        if spec.label is None:
            result.append(Sample(name, {}, counts.get((name, ""), 0)))
            continue
        seen = [value for counter, value in counts if counter == name]
        for value in (*spec.values, *sorted(set(seen) - set(spec.values))):
            result.append(Sample(name, {spec.label: value}, counts.get((name, value), 0)))
    return result


def reset() -> None:
    """Set every counter back to 0 (for tests; exporters expect counters never to drop)."""
    with _lock:
        _counts.clear()


def _label_text(labels: dict[str, str]) -> str:
    return ",".join(
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in labels.items()
    )


def _resolve_hook() -> MetricsHook | None:
    """Read ``METRICS_HOOK`` once; a setting that cannot be used is logged and ignored."""
    global _hook
    value = presence_settings.METRICS_HOOK
    hook: MetricsHook | None
    try:
        hook = load_hook(value)
    except PresenceImproperlyConfigured as e:
        # Reported by the system check django_presence.E009 at startup as well; at run
        # time presence must carry on without the exporter.
        logger.error("%s; metrics are not exported", e)
        hook = None
    _hook = hook
    return hook


def load_hook(value: Any) -> MetricsHook | None:
    """The callable a ``METRICS_HOOK`` value is or names, or None for None.

    Raises :class:`~django_presence.exceptions.PresenceImproperlyConfigured` when the
    value cannot be imported or is not callable.
    """
    hook: MetricsHook | None = valid_setting("METRICS_HOOK", value)
    return hook


def _hook_failed(name: str, error: Exception) -> None:
    global _failures_unlogged, _last_failure_log
    with _lock:
        _counts[("hook_errors", "")] = _counts.get(("hook_errors", ""), 0) + 1
    now = time.monotonic()
    with _failure_lock:
        if now - _last_failure_log < _FAILURE_LOG_INTERVAL:
            _failures_unlogged += 1
            return
        suppressed, _failures_unlogged = _failures_unlogged, 0
        _last_failure_log = now
    logger.error(
        "METRICS_HOOK raised for counter %s%s; presence carries on",
        name,
        f" ({suppressed} more failures in the last minute were not logged)" if suppressed else "",
        extra={"counter": name, "suppressed_failures": suppressed},
        exc_info=error,
    )


@receiver(setting_changed)
def _reset_hook(*, setting: str, **kwargs: Any) -> None:
    global _hook, _last_failure_log, _failures_unlogged
    if setting == SETTING_NAME:
        _hook = _UNRESOLVED
        with _failure_lock:
            _last_failure_log = float("-inf")
            _failures_unlogged = 0
