"""The example's presence policy: who sees what of whom (``DJANGO_PRESENCE["POLICY"]``)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from django_presence.policies import OpenPolicy

from .models import Consultation


class CarePolicy(OpenPolicy):
    """The demo's open policy (anyone watches and messages anyone), with private details.

    Everybody sees everybody's state (online, away, busy, offline): that is the demo.
    Details (the devices, the activities such as ``in_call``, the status text) are another
    matter on a care platform: a patient in the waiting room must learn that *their*
    doctor is in a consultation, so that they wait instead of leaving, but nobody else
    should learn what the doctor is doing.
    """

    async def can_see_details(self, user: Any, target_id: Any) -> bool:
        """Oneself, staff, and the two participants of a consultation, of each other.

        ``OpenPolicy`` shows every user's details to every other; the package's
        ``DefaultPolicy`` to staff and the user only, which would leave the waiting room
        unable to say "Doctor in a consultation" (it needs the doctor's activities) or
        show the doctor's status text. Relating doctor and patient through their
        consultations opens exactly what the waiting room needs, to exactly them.
        """
        if target_id == user.pk or getattr(user, "is_staff", False):
            return True
        return await Consultation.objects.filter(
            Q(doctor=user, patient_id=target_id) | Q(patient=user, doctor_id=target_id)
        ).aexists()
