"""``manage.py demo``: set up the example project and serve it, in one step."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from users.demo import DEMO_USERS, seed


class Command(BaseCommand):
    """Migrate, seed the demo users and a consultation, print how to log in, then serve."""

    help = (
        "Set up the demo (migrate, seed users and a consultation), print the credentials "
        "and URL, then serve it with uvicorn (unless --no-serve)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Where to serve, and whether to."""
        parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on.")
        parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on.")
        parser.add_argument(
            "--no-serve", action="store_true", help="Set up and print, but do not serve."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the demo."""
        started = time.monotonic()
        if not options["no_serve"]:
            self._check_server_installed()
        call_command("migrate", interactive=False, verbosity=0)
        seeded = seed()
        url = f"http://{_url_host(options['host'])}:{options['port']}/"
        consultation = seeded["consultation"]
        self.stdout.write(self.style.SUCCESS(f"Demo ready in {time.monotonic() - started:.1f} s."))
        backend = (
            "Redis at " + settings.REDIS_URL if settings.REDIS_URL else "in-memory (one process)"
        )
        self.stdout.write(f"Presence and channel layer: {backend}")
        self.stdout.write(f"Database: {settings.DATABASES['default']['NAME']}")
        self.stdout.write("Demo users (username / password):")
        for username, password, _first, _last, staff in DEMO_USERS:
            self.stdout.write(f"  {username:<8} / {password}{'   (staff)' if staff else ''}")
        self.stdout.write(f"Open {url} and log in as two users in two windows (one private).")
        self.stdout.write(f"Consultation room: {url}consultations/{consultation.pk}/")
        self.stdout.write(
            f"Waiting room (the patient's): {url}consultations/{consultation.pk}/waiting-room/"
        )
        if options["no_serve"]:
            return
        import uvicorn

        uvicorn.run(
            "example_project.asgi:application",
            host=options["host"],
            port=options["port"],
            # Channels' ProtocolTypeRouter has no lifespan handler.
            lifespan="off",
            # The consumer rejects frames over 64 KiB itself; refuse absurd ones earlier.
            ws_max_size=1024 * 1024,
            log_level="info",
        )

    def _check_server_installed(self) -> None:
        if importlib.util.find_spec("uvicorn") is None:
            raise CommandError(
                "The demo is served by uvicorn, which is not installed: "
                "pip install 'uvicorn[standard]' (or use --no-serve)."
            )
        if (
            importlib.util.find_spec("websockets") is None
            and importlib.util.find_spec("wsproto") is None
        ):
            raise CommandError(
                "uvicorn needs a WebSocket library and none is installed: "
                "pip install 'uvicorn[standard]' (or: pip install websockets)."
            )


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
