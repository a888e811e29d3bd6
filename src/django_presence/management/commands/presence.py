"""``manage.py presence``: inspect and maintain presence.

- ``presence status [--json]``: online users, their open connection counts, their state
  (online, away, busy; offline when invisible), status, devices and activities.
- ``presence sweep``: remove expired connections now (servers also do it on their own).
- ``presence reconcile [--batch-size N] [--no-progress]``: make the DB ``is_online`` agree
  with the backend, with a progress bar on a terminal; ``-v 2`` lists the users changed.
- ``presence disconnect USER``: close all of a user's sockets on every server (USER is a
  primary key or a username).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_presence.backends import get_backend
from django_presence.ids import pk_from_key
from django_presence.services import user_online_service
from django_presence.transitions import RECONCILE_BATCH, syncs_user_model


class Command(BaseCommand):
    """Inspect and maintain presence."""

    help = "Inspect and maintain user presence."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        status = sub.add_parser("status", help="List online users and their connection counts.")
        status.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        sub.add_parser("sweep", help="Remove expired connections now.")
        reconcile = sub.add_parser(
            "reconcile", help="Make the DB is_online agree with the backend."
        )
        reconcile.add_argument(
            "--batch-size",
            type=_positive_int,
            default=RECONCILE_BATCH,
            help=f"Users per database query (default {RECONCILE_BATCH}).",
        )
        # Also after the action (``presence reconcile -v 2``), as people type it; SUPPRESS
        # keeps the subparser from overwriting a -v given before the action.
        reconcile.add_argument(
            "-v",
            "--verbosity",
            type=int,
            choices=[0, 1, 2, 3],
            default=argparse.SUPPRESS,
            help="2 lists the users whose is_online changed.",
        )
        reconcile.add_argument(
            "--no-progress",
            action="store_true",
            help="Do not draw the progress bar (drawn only when stderr is a terminal).",
        )
        disconnect = sub.add_parser(
            "disconnect", help="Close all of a user's sockets on every server."
        )
        disconnect.add_argument("user", help="The user's primary key or username.")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"handle_{options['action']}")(**options)

    def handle_status(self, **options: Any) -> None:
        """Print online users and their counts.

        With a backend that keeps presence inside each process (the in-memory one), a
        command sees only its own process, so never the servers' users: it says so on
        stderr rather than let "0 users online" pass for the truth.
        """
        backend = get_backend()
        if not backend.shared_across_processes:
            self.stderr.write(
                f"{type(backend).__name__} keeps presence inside each server process: "
                "this command cannot see the users of your servers. Use the Redis backend "
                "to inspect them from here."
            )
        rows = async_to_sync(_status)()
        if options["json"]:
            self.stdout.write(
                json.dumps({"online_users": len(rows), "users": rows}, default=str, indent=2)
            )
            return
        self.stdout.write(f"{len(rows)} users online")
        if rows:
            self.stdout.write(
                f"{'USER':<24} {'CONNECTIONS':>11}  {'STATE':<8} {'STATUS':<10} "
                "DEVICES / ACTIVITIES"
            )
            for row in rows:
                details = ", ".join(row["devices"] + row["activities"])
                self.stdout.write(
                    f"{row['user_id']!s:<24} {row['connections']:>11}  {row['state']:<8} "
                    f"{row['status']:<10} {details}".rstrip()
                )

    def handle_disconnect(self, **options: Any) -> None:
        """Close every socket of a user, found by primary key or username."""
        user_model = get_user_model()
        manager = user_model._default_manager
        value = options["user"]
        user = manager.filter(**{user_model.USERNAME_FIELD: value}).first()
        if user is None:
            try:
                user = manager.filter(pk=value).first()
            except (ValueError, TypeError):
                user = None
        if user is None:
            raise CommandError(f"No user with primary key or username {value!r}.")
        closed = user_online_service.disconnect_user(user.pk)
        self.stdout.write(f"Disconnected user {user.pk} ({closed} connections).")

    def handle_sweep(self, **options: Any) -> None:
        """Sweep expired connections."""
        removed = user_online_service.sweep()
        self.stdout.write(f"Removed {removed} expired connections.")

    def handle_reconcile(self, **options: Any) -> None:
        """Make ``is_online`` agree with the backend (``user_online_service.reconcile()``).

        Draws a progress bar on stderr when it is a terminal; ``-v 2`` lists the users
        whose row changed.
        """
        if not syncs_user_model():
            raise CommandError(
                "No database copy of presence is kept (DJANGO_PRESENCE['STORE'] is None, "
                "SYNC_USER_MODEL is off, or the user model lacks the fields ONLINE_FIELD and "
                "LAST_SEEN_FIELD name): there is nothing to reconcile."
            )
        verbosity = int(options.get("verbosity", 1))
        progress: Progress | None = None

        def advance(done: int, total: int) -> None:
            nonlocal progress
            if progress is None:
                progress = Progress(
                    self.stderr,
                    total=total,
                    label="Reconciling users",
                    enabled=not options.get("no_progress"),
                )
            progress.advance(done - progress.done)

        result = user_online_service.reconcile(
            batch_size=options.get("batch_size") or RECONCILE_BATCH, progress=advance
        )
        if progress is not None:
            progress.finish()
        if verbosity >= 2:
            for pk in result.marked_online:
                self.stdout.write(f"Marked user {pk} online.")
            for pk in result.marked_offline:
                self.stdout.write(f"Marked user {pk} offline.")
        if verbosity >= 1:
            self.stdout.write(
                f"Marked {len(result.marked_online)} users online and "
                f"{len(result.marked_offline)} offline ({result.online_in_backend} online in "
                "the backend)."
            )


class Progress:
    """A one-line progress bar on ``stream``, drawn only when it is a terminal.

    Django commands have none built in. It redraws at most ten times a second, in place
    (``\\r``), and erases itself when finished, so that the command's own output (on
    stdout) stays clean; on a pipe or a file it writes nothing at all.
    """

    WIDTH = 30

    def __init__(self, stream: TextIO | Any, *, total: int, label: str, enabled: bool) -> None:
        isatty = getattr(stream, "isatty", None)
        self.stream = stream
        self.total = total
        self.label = label
        self.done = 0
        self.enabled = enabled and total > 0 and isatty is not None and bool(isatty())
        self._drawn_at = float("-inf")

    def advance(self, count: int) -> None:
        """Count ``count`` more items done, and redraw if due."""
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at >= 0.1 or self.done >= self.total):
            self._drawn_at = now
            self._write(self._line())

    def _line(self) -> str:
        done = min(self.done, self.total)
        filled = self.WIDTH * done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"\r{self.label} [{bar}] {done}/{self.total} ({100 * done // self.total}%)"

    def finish(self) -> None:
        """Erase the bar (the command prints its summary on stdout)."""
        if self.enabled and self._drawn_at != float("-inf"):
            self._write("\r" + " " * len(self._line()) + "\r")

    def _write(self, text: str) -> None:
        # Django's OutputWrapper would append a newline: write to the stream beneath.
        out = getattr(self.stream, "_out", self.stream)
        out.write(text)
        out.flush()


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


async def _status() -> list[dict[str, Any]]:
    backend = get_backend()
    pks = {key: pk_from_key(key) for key in await backend.all_online_user_ids()}
    found = await user_online_service.aget_presence(list(pks.values()))
    rows = []
    for key, pk in pks.items():
        presence = found[pk]
        rows.append(
            {
                "user_id": pk,
                "connections": await backend.connection_count(key),
                # The state others see, the user's status, their devices and activities.
                "state": presence.state,
                "status": presence.status,
                "devices": list(presence.devices),
                "activities": list(presence.activities),
            }
        )
    return sorted(rows, key=lambda row: row["user_id"])
