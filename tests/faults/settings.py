"""Settings of the fault suite's server processes, all read from the environment.

The test process starts each uvicorn server with ``DJANGO_SETTINGS_MODULE`` pointing here
and these variables set (see :mod:`tests.faults.harness`):

- ``FAULTS_DATABASE_URL``: a database the suite created (PostgreSQL, or a SQLite file).
- ``FAULTS_REDIS_URL``: the suite's own Redis (presence backend and channel layer).
- ``FAULTS_KEY_PREFIX``, ``FAULTS_TTL``, ``FAULTS_HEARTBEAT``, ``FAULTS_GRACE``: presence.
- ``FAULTS_EVENTS_FILE``: where :mod:`tests.faults.asgi` appends every presence signal.
"""

import os

import dj_database_url

SECRET_KEY = "faults-secret-key-that-is-long-enough-for-hs256-signatures-0123456789"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "channels",
    "django_presence",
    "tests.testapp",
]
AUTH_USER_MODEL = "testapp.User"
ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "tests.faults.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

DATABASES = {"default": dj_database_url.parse(os.environ["FAULTS_DATABASE_URL"])}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several server processes write the same file: wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30}

REDIS_URL = os.environ["FAULTS_REDIS_URL"]

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 defaults socket_timeout to 5 s, which makes channels_redis's idle
        # blocking receive raise (django/channels_redis#422): give it more than its timeout.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}], "capacity": 1000},
    }
}

DJANGO_PRESENCE = {
    "BACKEND": "django_presence.backends.redis.RedisBackend",
    "REDIS_URL": REDIS_URL,
    "KEY_PREFIX": os.environ.get("FAULTS_KEY_PREFIX", "faults"),
    "CONNECTION_TTL": float(os.environ.get("FAULTS_TTL", "3")),
    "HEARTBEAT_INTERVAL": float(os.environ.get("FAULTS_HEARTBEAT", "1")),
    "OFFLINE_GRACE_PERIOD": float(os.environ.get("FAULTS_GRACE", "0")),
    # Most tests were written against an open policy; tests/test_security.py covers the
    # private default.
    "POLICY": "django_presence.policies.OpenPolicy",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_presence": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "channels_redis": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
