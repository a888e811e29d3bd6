"""The consultation room page."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from .models import Consultation


@login_required
def room(request: HttpRequest, pk: int) -> HttpResponse:
    """The room: the other participant's presence, and the call's signalling."""
    consultation = get_object_or_404(
        Consultation.objects.select_related("doctor", "patient"), pk=pk
    )
    if not consultation.is_participant(request.user):
        raise Http404("No such consultation among yours.")
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
