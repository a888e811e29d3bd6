"""The two shims django-channels-presence 1.0 (2020) needs on Django 4+, applied from outside.

1. Its ``apps.py`` declares ``name = "rooms"``, so Django's automatic AppConfig discovery
   fails: :class:`ChannelsPresenceConfig` is listed in ``INSTALLED_APPS`` instead.
2. Its ``signals.py`` builds ``Signal(providing_args=[...])``, an argument removed in
   Django 4.0: an equivalent module is put in ``sys.modules`` before anything imports it.

Nothing in site-packages is edited.
"""

from __future__ import annotations

import sys
import types

from django.apps import AppConfig
from django.dispatch import Signal


def install_signals_shim() -> None:
    """Provide ``channels_presence.signals.presence_changed`` without ``providing_args``."""
    if "channels_presence.signals" in sys.modules:
        return
    import channels_presence

    module = types.ModuleType("channels_presence.signals")
    module.__doc__ = "channels_presence.signals, as it reads without ``providing_args``."
    module.presence_changed = Signal()  # type: ignore[attr-defined]
    sys.modules["channels_presence.signals"] = module
    channels_presence.signals = module  # type: ignore[attr-defined]


install_signals_shim()


class ChannelsPresenceConfig(AppConfig):
    """django-channels-presence's app config with the right module name."""

    name = "channels_presence"
    label = "channels_presence"
    default_auto_field = "django.db.models.AutoField"
