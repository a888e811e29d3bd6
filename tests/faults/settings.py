"""Settings of the fault suite's server processes, all read from the environment.

The test process starts each uvicorn server with ``DJANGO_SETTINGS_MODULE`` pointing here
and these variables set (see :mod:`tests.faults.harness`):

- ``FAULTS_DATABASE_URL``: a database the suite created (PostgreSQL, or a SQLite file).
- ``FAULTS_REDIS_URL``: the suite's own Redis (presence backend and channel layer).
- ``FAULTS_KEY_PREFIX``, ``FAULTS_TTL``, ``FAULTS_HEARTBEAT``, ``FAULTS_GRACE``: presence.
- ``FAULTS_HISTORY_SIZE``, ``FAULTS_UNDELIVERED_AFTER`` (seconds, or ``off``): delivery.
- ``FAULTS_EVENTS_FILE``: where :mod:`tests.faults.asgi` appends every presence and
  ``message_undelivered`` signal.
"""

import os

import dj_database_url

from tests.faults.config import channel_layers, presence_settings

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

CHANNEL_LAYERS = channel_layers(REDIS_URL)

DJANGO_PRESENCE = presence_settings(os.environ)

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
