"""The consultations app: doctor and patient meet over a WebRTC call."""

from django.apps import AppConfig


class ConsultationsConfig(AppConfig):
    """Consultations, their room page and the signalling consumer."""

    name = "consultations"
    default_auto_field = "django.db.models.BigAutoField"
