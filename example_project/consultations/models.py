"""A consultation between a doctor and a patient."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Consultation(models.Model):
    """A video consultation; only its doctor and its patient may join its room."""

    doctor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consultations_given"
    )
    patient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consultations_taken"
    )
    subject = models.CharField(max_length=200, blank=True)
    scheduled_for = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-scheduled_for"]

    def __str__(self) -> str:
        return f"Consultation {self.pk}: {self.doctor} with {self.patient}"

    def is_participant(self, user: Any) -> bool:
        """Whether ``user`` is this consultation's doctor or patient."""
        return user.is_authenticated and user.pk in (self.doctor_id, self.patient_id)

    def other_participant_id(self, user: Any) -> Any:
        """The primary key of the participant who is not ``user``."""
        return self.patient_id if user.pk == self.doctor_id else self.doctor_id
