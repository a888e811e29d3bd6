"""Where the database copy of presence lives, and the queries that read and write it.

``DJANGO_PRESENCE["STORE"]`` chooses (``docs/settings.md``):

- ``"user"``: the user model's own fields, named by ``ONLINE_FIELD`` and
  ``LAST_SEEN_FIELD`` (``OnlineStatusMixin`` provides ``is_online`` and ``last_seen``);
- ``"table"``: :class:`~django_presence.models.UserPresence`, one row per user, reached
  from the user model as ``presence`` (``User.objects.filter(presence__is_online=True)``);
- ``None``: no copy. ``SYNC_USER_MODEL = False`` without ``STORE`` means the same
  (the setting ``STORE`` succeeds).

:func:`database_copy` resolves the settings into a :class:`DatabaseCopy`, which every
reader and writer of the copy goes through (the transition engine, reconcile, the
snapshot's ``last_seen``, the admin, ``manage.py presence``). Reads go through the user
model with a lookup prefix (``""`` or ``"presence__"``), so one query serves both kinds;
writes are two statements per batch at most either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.core.signals import setting_changed
from django.db import IntegrityError, models, router, transaction
from django.dispatch import receiver

from .conf import SETTING_NAME, presence_settings, valid_setting

STORE_USER = "user"
STORE_TABLE = "table"
#: The reverse accessor of UserPresence on the user model (its related_name).
TABLE_RELATION = "presence"


def store_kind() -> str | None:
    """The resolved ``STORE``: ``"user"``, ``"table"`` or ``None``.

    ``STORE`` when the project sets it; otherwise ``None`` if ``SYNC_USER_MODEL`` is off
    (a project configured before ``STORE`` existed), else the default, ``"user"``.
    """
    if "STORE" not in presence_settings.user_settings and not presence_settings.SYNC_USER_MODEL:
        return None
    kind: str | None = valid_setting("STORE")
    return kind


def contradiction() -> str | None:
    """Why ``STORE`` and ``SYNC_USER_MODEL`` disagree, when the project sets both; or None."""
    user = presence_settings.user_settings
    if "STORE" not in user or "SYNC_USER_MODEL" not in user:
        return None
    store, sync = user["STORE"], user["SYNC_USER_MODEL"]
    if sync is False and store is not None:
        return f"STORE = {store!r} writes presence to the database, SYNC_USER_MODEL = False not"
    if sync is True and store is None:
        return "STORE = None writes nothing to the database, SYNC_USER_MODEL = True does"
    return None


def user_field_problems(model: type[models.Model]) -> list[str]:
    """What keeps ``model`` from holding the copy itself (``STORE = "user"``); [] if nothing.

    ``ONLINE_FIELD`` must be a concrete ``BooleanField``; ``LAST_SEEN_FIELD`` a concrete
    ``DateTimeField`` with ``null=True`` (users who never went offline have no value).
    """
    wanted = [
        (valid_setting("ONLINE_FIELD"), models.BooleanField, False, "a BooleanField"),
        (
            valid_setting("LAST_SEEN_FIELD"),
            models.DateTimeField,
            True,
            "a DateTimeField with null=True",
        ),
    ]
    problems = []
    for name, kind, null, described in wanted:
        try:
            found = model._meta.get_field(name)
        except FieldDoesNotExist:
            problems.append(f"has no field {name!r}")
            continue
        if not (isinstance(found, kind) and found.concrete) or (null and not found.null):
            problems.append(f"has a field {name!r} that is not {described}")
    return problems


@dataclass(frozen=True)
class DatabaseCopy:
    """The database copy of presence: which model's rows hold it, under which names."""

    kind: str
    #: The model whose rows are written: the user model, or UserPresence.
    model: type[models.Model]
    #: The field names on ``model``.
    online: str
    last_seen: str
    #: Lookup prefix from the user model to those fields: "" or "presence__".
    via: str

    @property
    def online_lookup(self) -> str:
        """``is_online`` as a lookup on the user model (``presence__is_online``...)."""
        return self.via + self.online

    @property
    def last_seen_lookup(self) -> str:
        """``last_seen`` as a lookup on the user model."""
        return self.via + self.last_seen

    # -- writes (sync: the engine calls them in a worker thread) -------------------------

    def write(self, online: Sequence[Any], offline: Sequence[Any], now: datetime) -> None:
        """Mark the users ``online`` (pks) online, and ``offline`` offline as of ``now``.

        At most one statement for each list: ``UPDATE`` on the user model, an upsert
        (``INSERT ... ON CONFLICT DO UPDATE``) on the table.
        """
        if self.kind == STORE_TABLE:
            if online:
                self._upsert([self.model(user_id=pk, **{self.online: True}) for pk in online])
            if offline:
                stamp = {self.online: False, self.last_seen: now}
                self._upsert([self.model(user_id=pk, **stamp) for pk in offline], self.last_seen)
            return
        manager = self.model._default_manager
        if online:
            manager.filter(pk__in=online, **{self.online: False}).update(**{self.online: True})
        if offline:
            manager.filter(pk__in=offline).update(**{self.online: False, self.last_seen: now})

    def _upsert(self, rows: list[models.Model], *also: str) -> None:
        manager = self.model._default_manager
        fields = [self.online, *also]
        try:
            with transaction.atomic(using=router.db_for_write(self.model)):
                manager.bulk_create(
                    rows, update_conflicts=True, unique_fields=["user"], update_fields=fields
                )
        except IntegrityError:
            # A user deleted meanwhile (the row's foreign key fails): write the others.
            pks = get_user_model()._default_manager.filter(pk__in=[row.pk for row in rows])
            existing = set(pks.values_list("pk", flat=True))
            rows = [row for row in rows if row.pk in existing]
            if rows:
                manager.bulk_create(
                    rows, update_conflicts=True, unique_fields=["user"], update_fields=fields
                )

    # -- reads (through the user model, one query each) ----------------------------------

    def users(self) -> models.QuerySet[Any]:
        """The user model's queryset the reads start from."""
        return get_user_model()._default_manager.all()

    def online_pks(self) -> list[Any]:
        """Every user whose copy says online."""
        return list(self.users().filter(**{self.online_lookup: True}).values_list("pk", flat=True))

    def not_online(self, pks: Sequence[Any]) -> list[Any]:
        """Those of the users ``pks`` that exist and whose copy does not say online.

        A user without a row in the table counts as offline.
        """
        rows = self.users().filter(pk__in=pks).exclude(**{self.online_lookup: True})
        return list(rows.values_list("pk", flat=True))

    def last_seen_of(self, pks: Sequence[Any]) -> dict[Any, datetime | None]:
        """``last_seen`` of the users ``pks``, by pk (None: never went offline, or no row)."""
        rows = self.users().filter(pk__in=pks).values_list("pk", self.last_seen_lookup)
        return dict(rows)

    def read(self, user: models.Model) -> tuple[bool | None, datetime | None]:
        """``(is_online, last_seen)`` of one user object; ``(False, None)`` with no row.

        No query with the user store, or when the table's row was fetched with the user
        (``select_related("presence")``).
        """
        source: Any = user
        if self.kind == STORE_TABLE:
            try:
                source = getattr(user, TABLE_RELATION)
            except ObjectDoesNotExist:
                return False, None  # never connected, or the row was lost: offline
        return getattr(source, self.online, None), getattr(source, self.last_seen, None)


#: What :func:`database_copy` found for the current settings (a list: unset when empty).
_copy: list[DatabaseCopy | None] = []


@receiver(setting_changed)
def _forget_copy(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING_NAME, "AUTH_USER_MODEL"):
        _copy.clear()


def database_copy() -> DatabaseCopy | None:
    """The database copy the settings choose, or None when none is kept.

    None too with ``STORE = "user"`` when the user model lacks the fields
    (``django_presence.E001`` reports it). Worked out once per settings (every transition
    asks), and again when Django's settings change.
    """
    if _copy:
        return _copy[0]
    copy = _database_copy()
    _copy.append(copy)
    return copy


def _database_copy() -> DatabaseCopy | None:
    kind = store_kind()
    if kind is None:
        return None
    if kind == STORE_TABLE:
        from .models import UserPresence

        return DatabaseCopy(
            STORE_TABLE, UserPresence, "is_online", "last_seen", f"{TABLE_RELATION}__"
        )
    model = get_user_model()
    if user_field_problems(model):
        return None
    return DatabaseCopy(
        STORE_USER,
        model,
        valid_setting("ONLINE_FIELD"),
        valid_setting("LAST_SEEN_FIELD"),
        "",
    )
