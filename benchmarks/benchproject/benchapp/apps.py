"""App config: connects the event counters of the variant this process runs."""

from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    """Connects the presence signals (package or peer) to :mod:`benchproject.stats`."""

    name = "benchproject.benchapp"
    label = "benchapp"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from .. import stats

        stats.connect_receivers()
