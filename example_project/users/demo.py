"""The demo's seeded users and consultation (``manage.py demo``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

#: (username, password, first name, last name, is_staff). Fixed demo passwords: never
#: run the demo with real data.
DEMO_USERS = [
    ("doctor", "doctor-demo", "Dana", "Doctor", False),
    ("patient", "patient-demo", "Pat", "Patient", False),
    ("admin", "admin-demo", "Ada", "Admin", True),
]


@transaction.atomic
def seed() -> dict[str, Any]:
    """Create (or reset) the demo users and their consultation; return them by name."""
    from consultations.models import Consultation

    user_model = get_user_model()
    users: dict[str, Any] = {}
    for username, password, first, last, staff in DEMO_USERS:
        user, _ = user_model.objects.get_or_create(username=username)
        user.first_name, user.last_name = first, last
        user.is_staff = user.is_superuser = staff
        user.is_active = True
        if not user.check_password(password):
            # Only when it differs: a new hash would log out every open session.
            user.set_password(password)
        user.save()
        users[username] = user
    consultation = Consultation.objects.filter(
        doctor=users["doctor"], patient=users["patient"]
    ).first()
    if consultation is None:
        consultation = Consultation.objects.create(
            doctor=users["doctor"], patient=users["patient"], subject="Follow-up"
        )
    users["consultation"] = consultation
    return users
