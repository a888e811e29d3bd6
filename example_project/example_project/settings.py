"""Settings of the example project: a small platform adopting django_presence.

Out of the box it runs on embedded defaults: SQLite, Channels' in-memory layer and the
in-memory presence backend (one server process). With ``REDIS_URL`` set it uses
channels_redis and the Redis presence backend, so several server processes can run side
by side on one Redis.

Environment variables (all optional):

- ``REDIS_URL``: switch to Redis (needs ``pip install django-user-presence[redis]``).
- ``EXAMPLE_DATABASE_PATH``: the SQLite file (default ``example_project/db.sqlite3``).
- ``EXAMPLE_SECRET_KEY``: the secret key (a fixed demo key otherwise: never deploy it).
- ``EXAMPLE_DEBUG``: ``0`` to turn DEBUG off.
- ``PRESENCE_OFFLINE_GRACE_PERIOD``, ``PRESENCE_HEARTBEAT_INTERVAL``,
  ``PRESENCE_CONNECTION_TTL``, ``PRESENCE_IDLE_AFTER``, ``PRESENCE_ACTIVITY_WRITE_INTERVAL``:
  the package's timings in seconds (the e2e tests shorten them).
- ``PRESENCE_KEY_PREFIX``: the Redis key prefix (to share one Redis between demos).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}.") from None


SECRET_KEY = os.environ.get(
    "EXAMPLE_SECRET_KEY",
    # A fixed key so that the demo's tokens survive a restart; long enough for HS256.
    "example-project-demo-secret-key-do-not-deploy-0123456789abcdef",
)
DEBUG = os.environ.get("EXAMPLE_DEBUG", "1") != "0"
ALLOWED_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    *filter(None, os.environ.get("EXAMPLE_ALLOWED_HOSTS", "").split(",")),
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_presence",
    "users",
    "consultations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
ASGI_APPLICATION = "example_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "users.context_processors.people_names",
                "users.context_processors.presence_client_options",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DATABASE_PATH") or BASE_DIR / "db.sqlite3",
        # Presence writes come from the ASGI server's threads while pages read: wait for
        # the lock rather than failing with "database is locked".
        "OPTIONS": {"timeout": 20},
    }
}

AUTH_USER_MODEL = "users.User"
if os.environ.get("EXAMPLE_INSECURE_FAST_PASSWORD_HASHING") == "1":
    # For the package's own tests only, which start dozens of demo servers (each seeding
    # three users) and log in through browsers: Django's default hasher spends over half
    # a second of CPU per password. Never set it for a real deployment.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

#: Lifetime of the tokens the pages hand to presence.js; it asks for a fresh one before
#: every reconnect, and the server closes a socket whose token expired (code 4001).
EXAMPLE_TOKEN_LIFETIME = _seconds("EXAMPLE_TOKEN_LIFETIME", 300)

REDIS_URL = os.environ.get("REDIS_URL", "")

DJANGO_PRESENCE = {
    # A demo: every user may see and message every other, and only a consultation's
    # participants (and staff) see each other's devices, activities and status text
    # (consultations/presence.py). A real platform subclasses DefaultPolicy, which is
    # private, and relates doctors to their patients.
    "POLICY": "consultations.presence.CarePolicy",
    "OFFLINE_GRACE_PERIOD": _seconds("PRESENCE_OFFLINE_GRACE_PERIOD", 5),
    "HEARTBEAT_INTERVAL": _seconds("PRESENCE_HEARTBEAT_INTERVAL", 15),
    "CONNECTION_TTL": _seconds("PRESENCE_CONNECTION_TTL", 60),
    # Away after a minute without input (the package's default is 5 minutes): short
    # enough to watch it happen in the demo. The pages report activity at most every
    # IDLE_AFTER / 4 seconds (users/context_processors.py).
    "IDLE_AFTER": _seconds("PRESENCE_IDLE_AFTER", 60),
    "ACTIVITY_WRITE_INTERVAL": _seconds("PRESENCE_ACTIVITY_WRITE_INTERVAL", 10),
}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # Lets demos (and the tests) share one Redis without sharing groups.
                "prefix": os.environ.get("EXAMPLE_CHANNELS_PREFIX", "asgi"),
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # redis-py 8 times out reads after 5 s by default, which kills
                        # channels_redis's idle 5 s blocking receive (channels_redis#422).
                        "socket_timeout": 30,
                        # Its pool of 100 connections raises MaxConnectionsError in a
                        # burst of connects, where redis-py 7 waited.
                        "max_connections": 1000,
                    }
                ],
            },
        }
    }
    DJANGO_PRESENCE.update(
        {
            "BACKEND": "django_presence.backends.redis.RedisBackend",
            "REDIS_URL": REDIS_URL,
            "KEY_PREFIX": os.environ.get("PRESENCE_KEY_PREFIX", "example-presence"),
        }
    )
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    DJANGO_PRESENCE["BACKEND"] = "django_presence.backends.memory.MemoryBackend"
    # The in-memory backend is right for a single-process demo; the check warns in case
    # DEBUG is turned off (a production deployment needs Redis).

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_presence": {"handlers": ["console"], "level": "INFO"},
        "consultations": {"handlers": ["console"], "level": "INFO"},
    },
}
