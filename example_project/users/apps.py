"""The users app: the platform's custom user model and its pages."""

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _sqlite_wal(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Put the demo's SQLite database in WAL mode.

    Two servers may share the file (the browser tests run two). In SQLite's default
    journal mode a statement that turns its read lock into a write lock while another
    connection commits fails at once with "database is locked", whatever the timeout
    (SQLite's deadlock rule); in WAL mode readers never block the writer and writers
    wait for each other within the timeout.
    """
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")


class UsersConfig(AppConfig):
    """Users, the dashboard, messages, notifications and groups."""

    name = "users"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the SQLite set-up of the demo's database connections."""
        connection_created.connect(_sqlite_wal, dispatch_uid="example.sqlite_wal")
