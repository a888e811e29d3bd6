"""The consultation room page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from django_presence.services import user_online_service

from .models import Consultation

#: What the waiting room says of the doctor (example.js has the same table).
DOCTOR_LABELS = {
    "in_call": "Doctor in a consultation",
    "online": "Doctor available",
    "away": "Doctor away",
    "busy": "Doctor busy",
    "offline": "Doctor offline",
}


def doctor_availability(presence: Any) -> str:
    """``in_call`` when a connection of the doctor has that activity, else their state."""
    if presence is None:
        return "offline"
    if presence.state != "offline" and "in_call" in presence.activities:
        return "in_call"
    return str(presence.state)


def participant_consultation(request: HttpRequest, pk: int) -> Consultation:
    """Consultation ``pk``, if the requesting user takes part in it; else 404."""
    consultation = get_object_or_404(
        Consultation.objects.select_related("doctor", "patient"), pk=pk
    )
    if not consultation.is_participant(request.user):
        raise Http404("No such consultation among yours.")
    return consultation


@login_required
def room(request: HttpRequest, pk: int) -> HttpResponse:
    """The room: the other participant's presence, and the call's signalling."""
    consultation = participant_consultation(request, pk)
    peer = get_user_model().objects.get(pk=consultation.other_participant_id(request.user))
    return render(
        request,
        "consultations/room.html",
        {
            "consultation": consultation,
            "peer": peer,
            "is_doctor": request.user.pk == consultation.doctor_id,
        },
    )


@login_required
def waiting_room(request: HttpRequest, pk: int) -> HttpResponse:
    """The patient's waiting room: whether the doctor is available, busy, in a consultation."""
    consultation = participant_consultation(request, pk)
    doctor = consultation.doctor
    # As this viewer may see the doctor (the policy decides): the page's first paint,
    # which the doctor's status_changed frames then keep up to date.
    seen = user_online_service.get_presence([doctor.pk], viewer=request.user).get(doctor.pk)
    availability = doctor_availability(seen)
    return render(
        request,
        "consultations/waiting_room.html",
        {
            "consultation": consultation,
            "doctor": doctor,
            "availability": availability,
            "label": DOCTOR_LABELS[availability],
            "status_text": seen.status_text if seen is not None else "",
        },
    )
