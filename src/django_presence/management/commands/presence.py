"""``manage.py presence``: inspect and maintain presence.

- ``presence status [--json]``: online users and their open connection counts.
- ``presence sweep``: remove expired connections now (servers also do it on their own).
- ``presence reconcile``: make the DB ``is_online`` agree with the backend.
- ``presence disconnect USER``: close all of a user's sockets on every server (USER is a
  primary key or a username).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_presence.backends import get_backend
from django_presence.conf import presence_settings
from django_presence.services import user_online_service
from django_presence.services.online import _pk_from_key


class Command(BaseCommand):
    """Inspect and maintain presence."""

    help = "Inspect and maintain user presence."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        status = sub.add_parser("status", help="List online users and their connection counts.")
        status.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        sub.add_parser("sweep", help="Remove expired connections now.")
        sub.add_parser("reconcile", help="Make the DB is_online agree with the backend.")
        disconnect = sub.add_parser(
            "disconnect", help="Close all of a user's sockets on every server."
        )
        disconnect.add_argument("user", help="The user's primary key or username.")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"handle_{options['action']}")(**options)

    def handle_status(self, **options: Any) -> None:
        """Print online users and their counts."""
        rows = async_to_sync(_status)()
        if options["json"]:
            self.stdout.write(
                json.dumps({"online_users": len(rows), "users": rows}, default=str, indent=2)
            )
            return
        self.stdout.write(f"{len(rows)} users online")
        if rows:
            self.stdout.write(f"{'USER':<24} {'CONNECTIONS':>11}")
            for row in rows:
                self.stdout.write(f"{row['user_id']!s:<24} {row['connections']:>11}")

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
        """Write the backend's truth into ``is_online`` (and ``last_seen`` of stale users)."""
        if not presence_settings.SYNC_USER_MODEL:
            raise CommandError(
                "DJANGO_PRESENCE['SYNC_USER_MODEL'] is off: the user model has no presence "
                "fields to reconcile."
            )
        backend = get_backend()
        manager = get_user_model()._default_manager
        online = {_pk_from_key(k) for k in async_to_sync(backend.all_online_user_ids)()}
        marked_online = sum(
            manager.filter(pk__in=batch, is_online=False).update(is_online=True)
            for batch in _batches(list(online))
        )
        stale = [
            pk
            for pk in manager.filter(is_online=True).values_list("pk", flat=True).iterator()
            if pk not in online
        ]
        marked_offline = 0
        now = timezone.now()
        for batch in _batches(stale):
            # Users who came online since the backend was read are left alone.
            came_online = async_to_sync(backend.online_user_ids)(str(pk) for pk in batch)
            batch = [pk for pk in batch if str(pk) not in came_online]
            marked_offline += manager.filter(pk__in=batch, is_online=True).update(
                is_online=False, last_seen=now
            )
        self.stdout.write(
            f"Marked {marked_online} users online and {marked_offline} offline "
            f"({len(online)} online in the backend)."
        )


# Primary keys per query, below every database's limit of query parameters.
_BATCH = 500


def _batches(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


async def _status() -> list[dict[str, Any]]:
    backend = get_backend()
    rows = [
        {"user_id": _pk_from_key(key), "connections": await backend.connection_count(key)}
        for key in await backend.all_online_user_ids()
    ]
    return sorted(rows, key=lambda row: row["user_id"])
