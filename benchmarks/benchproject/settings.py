"""Settings of the benchmark's servers; the environment picks the variant and the services.

``BENCH_VARIANT``: ``bare``, ``package``, ``user``, ``peer``, ``original``, ``bare-cheap``
or ``package-cheap``.
``BENCH_DATABASE_URL`` and ``BENCH_REDIS_URL`` are set by ``benchmarks/run.py``.
"""

import importlib.util
import os

import dj_database_url

BENCH_VARIANT = os.environ.get("BENCH_VARIANT", "bare")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

SECRET_KEY = "bench-secret-key-that-is-long-enough-for-hs256-signatures-0123456789abcdef"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "django_presence",
    "benchproject.benchapp.apps.BenchAppConfig",
]
#: django-channels-presence is installed in the benchmark's own virtualenv only.
HAS_PEER = importlib.util.find_spec("channels_presence") is not None
if HAS_PEER:
    INSTALLED_APPS.append("benchproject.shims.ChannelsPresenceConfig")

AUTH_USER_MODEL = "benchapp.User"
ROOT_URLCONF = "benchproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Persistent connections for every variant: a new PostgreSQL backend per query would
# dominate every number, and its CPU would escape the per-backend measurement.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_presence"),
        conn_max_age=600,
    )
}

# redis-py 8 made socket_timeout 5 s, shorter than channels_redis 4.3's blocking receive
# (django/channels_redis#422): every variant gets the same explicit 30 s.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}]},
    }
}

DJANGO_PRESENCE = {
    "BACKEND": "django_presence.backends.redis.RedisBackend",
    "REDIS_URL": REDIS_URL,
    "KEY_PREFIX": "bench",
    "OFFLINE_GRACE_PERIOD": 0,
    "CONNECTION_TTL": float(os.environ.get("BENCH_CONNECTION_TTL", "60")),
    "HEARTBEAT_INTERVAL": float(os.environ.get("BENCH_HEARTBEAT_INTERVAL", "15")),
    "TRANSITION_BATCH_WINDOW": float(os.environ.get("BENCH_BATCH_WINDOW", "0")),
    # The benchmark's clients open sockets far faster than any real user.
    "RATE_LIMIT_RATE": None,
    "USER_RATE_LIMIT_RATE": None,
    # ... and hold more sockets per user and per process than a real deployment allows.
    "MAX_CONNECTIONS_PER_USER": None,
    "MAX_CONNECTIONS_PER_PROCESS": None,
    "POLICY": "django_presence.policies.OpenPolicy",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
