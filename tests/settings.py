"""Settings of the test project.

``DATABASE_URL`` selects the database (SQLite in memory by default); ``REDIS_URL`` is set
by ``tests/conftest.py`` to a private Redis server when the environment has none. Server
processes started by the tests (``tests/servers.py``) also read
``PRESENCE_TEST_KEY_PREFIX``, ``PRESENCE_TEST_CHANNEL_LAYERS`` and ``PRESENCE_TEST_SETTINGS``.
"""

import json
import os

import dj_database_url

SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256-and-hs512-signatures-0123456789"
DEBUG = True
USE_TZ = True
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.admin",
    "django.contrib.messages",
    "channels",
    "django_presence",
    "tests.testapp",
]
AUTH_USER_MODEL = "testapp.User"
# Django's own advice for test suites: the default PBKDF2 hasher (over a million
# iterations) was half the CPU of the consumer, admin and middleware tests, which create
# users with passwords by the hundred. No test is about how passwords are hashed.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "tests.asgi.application"

DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL", "sqlite://:memory:"))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("SQLITE_TEST_NAME", "")}

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DJANGO_PRESENCE = {
    "BACKEND": "django_presence.backends.memory.MemoryBackend",
    "CONNECTION_TTL": 30,
    "HEARTBEAT_INTERVAL": 10,
    "OFFLINE_GRACE_PERIOD": 0,
    # Most tests were written against an open policy; tests/test_security.py covers the
    # private default.
    "POLICY": "django_presence.policies.OpenPolicy",
}

if os.environ.get("PRESENCE_TEST_KEY_PREFIX"):
    # A server process started by the tests shares presence with them through Redis.
    DJANGO_PRESENCE.update(
        BACKEND="django_presence.backends.redis.RedisBackend",
        REDIS_URL=os.environ["REDIS_URL"],
        KEY_PREFIX=os.environ["PRESENCE_TEST_KEY_PREFIX"],
    )
    # tests/servers.py's AsgiServer may also give it a channel layer (JSON) and settings.
    if os.environ.get("PRESENCE_TEST_CHANNEL_LAYERS"):
        CHANNEL_LAYERS = json.loads(os.environ["PRESENCE_TEST_CHANNEL_LAYERS"])
    DJANGO_PRESENCE.update(json.loads(os.environ.get("PRESENCE_TEST_SETTINGS") or "{}"))

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
