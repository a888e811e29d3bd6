"""Create the fault suite's schema and users: ``python -m tests.faults.dbsetup N``.

Runs with ``DJANGO_SETTINGS_MODULE=tests.faults.settings``. Creates users ``user0`` ..
``user<N-1>`` (active), plus ``inactive`` (is_active=False), and prints their ids as JSON.
"""

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.settings")


def main() -> None:
    """Migrate, create the users, print ``{"users": [ids], "inactive": id}``."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    user_model = get_user_model()
    count = int(sys.argv[1])
    users = [user_model(username=f"user{i}") for i in range(count)]
    ids = [u.pk for u in user_model.objects.bulk_create(users)]
    if None in ids:  # backends without RETURNING
        ids = list(
            user_model.objects.filter(username__startswith="user")
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    inactive = user_model.objects.create(username="inactive", is_active=False)
    print(json.dumps({"users": ids, "inactive": inactive.pk}))


if __name__ == "__main__":
    main()
