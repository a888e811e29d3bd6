"""Admin of the consultations app."""

from django.contrib import admin

from .models import Consultation


@admin.register(Consultation)
class ConsultationAdmin(admin.ModelAdmin):
    """Consultations, by date."""

    list_display = ("pk", "doctor", "patient", "subject", "scheduled_for")
