"""Migrate and create the benchmark's users: ``python -m benchproject.setup_db N``.

Prints the primary keys of users ``bench0`` .. ``bench<N-1>`` as a JSON list.
"""

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")


def main() -> None:
    """Migrate, create the missing users, print all their ids in order."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    user_model = get_user_model()
    count = int(sys.argv[1])
    existing = set(user_model.objects.values_list("username", flat=True))
    missing = [f"bench{i}" for i in range(count) if f"bench{i}" not in existing]
    user_model.objects.bulk_create(
        [user_model(username=name) for name in missing], batch_size=1000
    )
    ids = dict(user_model.objects.values_list("username", "pk"))
    print(json.dumps([ids[f"bench{i}"] for i in range(count)]))


if __name__ == "__main__":
    main()
