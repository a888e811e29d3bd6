"""Django admin integration: live presence on your user changelist, and a connection monitor.

The package registers nothing in the admin by itself, so it never takes over a project's
own ``UserAdmin``. Add :class:`OnlineStatusAdminMixin` first among the bases of the admin
class you already have::

    from django.contrib import admin
    from django.contrib.auth.admin import UserAdmin
    from django_presence.admin import OnlineStatusAdminMixin

    from .models import User

    @admin.register(User)
    class MyUserAdmin(OnlineStatusAdminMixin, UserAdmin):
        pass

On the default ``auth.User``, unregister Django's admin first and register yours::

    from django.contrib.auth.models import User

    admin.site.unregister(User)

    @admin.register(User)
    class PresenceUserAdmin(OnlineStatusAdminMixin, UserAdmin):
        pass

The changelist then gains an "online now" column and filter, which read the live presence
backend (one round trip per page, whatever its size), next to an "online (DB)"
column showing the database copy of ``is_online`` (the user model's field or the
package's table, as ``STORE`` says); and a "Connection monitor" page under the changelist's URL
(``<admin>/<app>/<user model>/presence/``) lists every online user's connections, with
buttons to run a sweep and to disconnect a user everywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .backends import Availability, BasePresenceBackend, ConnectionInfo, get_backend
from .conf import presence_settings
from .ids import key_order, pk_or_none
from .services import user_online_service
from .store import STORE_TABLE, TABLE_RELATION, DatabaseCopy, database_copy
from .transitions import syncs_user_model

if TYPE_CHECKING:
    from django.contrib.admin.views.main import ChangeList

    _ModelAdminBase = admin.ModelAdmin[Any]
else:
    _ModelAdminBase = object

logger = logging.getLogger(__name__)

#: Attribute set on each user of a changelist page to the live presence read for the page.
_ONLINE_ATTR = "_presence_online_now"
#: Annotation of the admin's queryset: the database copy's is_online (sorts the column).
_DB_ONLINE_ANNOTATION = "presence_online_in_db"


def live_online_pks(model: type[models.Model]) -> list[Any]:
    """The primary keys of every user the backend holds online now (one round trip)."""
    keys = get_backend().all_online_user_ids_sync()
    pks = (pk_or_none(key) for key in keys)
    return [pk for pk in pks if pk is not None]


class OnlineNowListFilter(admin.SimpleListFilter):
    """Changelist filter "online now", read from the live presence backend, not the DB.

    Fetches every online user id in one round trip and filters with ``pk__in``, so it suits
    up to some tens of thousands of simultaneous users (the database's limit on query
    parameters applies).
    """

    title = _("online now")
    parameter_name = "online_now"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """The two choices: online now, or not."""
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> Any:
        """Keep the users the backend holds online (``yes``) or the others (``no``)."""
        value = self.value()
        if value not in ("yes", "no"):
            return None
        try:
            pks = live_online_pks(queryset.model)
        except Exception:
            # The backend (or the DB) is unreachable: the page says so instead of a 500.
            logger.exception("Could not read who is online for the admin filter")
            messages.error(request, _("The presence backend is unavailable; nothing shown."))
            return queryset.none()
        if value == "yes":
            return queryset.filter(pk__in=pks)
        return queryset.exclude(pk__in=pks)


class OnlineInDbListFilter(admin.SimpleListFilter):
    """Changelist filter "online (DB)": the database copy, whichever ``STORE`` holds it.

    With ``STORE = "table"`` a user who never connected has no row and counts as offline
    (a plain ``list_filter = ["presence__is_online"]`` would leave them out of "No").
    """

    title = _("online (DB)")
    parameter_name = "online_db"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """The two choices: online in the database copy, or not."""
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> Any:
        """Keep the users whose copy says online (``yes``) or the others (``no``)."""
        value = self.value()
        copy = database_copy()
        if value not in ("yes", "no") or copy is None:
            return None
        if value == "yes":
            return queryset.filter(**{copy.online_lookup: True})
        return queryset.exclude(**{copy.online_lookup: True})


def duration(seconds: float) -> str:
    """A short human duration: ``"42 s"``, ``"3 min 5 s"``, ``"2 h 10 min"``, ``"3 d 4 h"``."""
    total = max(0, round(seconds))
    if total < 60:
        return gettext("%(s)d s") % {"s": total}
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return gettext("%(m)d min %(s)d s") % {"m": minutes, "s": secs}
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return gettext("%(h)d h %(m)d min") % {"h": hours, "m": minutes}
    days, hours = divmod(hours, 24)
    return gettext("%(d)d d %(h)d h") % {"d": days, "h": hours}


@dataclass
class MonitoredConnection:
    """One connection as the monitor shows it; times converted to this server's clock."""

    connection_id: str
    server: str
    opened: datetime
    expires: datetime
    #: When the lease was last renewed (a heartbeat or the connect), for open connections.
    renewed: datetime | None
    closing: bool
    expired: bool
    #: Ages as text, measured on the backend's clock: "12 s", "3 min 5 s"...
    opened_ago: str = ""
    renewed_ago: str = ""
    expires_in: str = ""
    #: What the connection says it is (docs/presence-states.md), "" when unset.
    device: str = ""
    activity: str = ""


@dataclass
class MonitoredUser:
    """One online user and their connections, for the monitor."""

    key: str
    pk: Any
    user: Any
    connections: list[MonitoredConnection] = field(default_factory=list)
    #: The state others see (online, away, busy; offline while invisible), the status
    #: the user set and its text.
    state: str = ""
    status: str = ""
    status_text: str = ""

    @property
    def db_is_online(self) -> bool | None:
        """The database copy's ``is_online``, or None when none is kept."""
        copy = database_copy()
        if copy is None or self.user is None:
            return None
        return copy.read(self.user)[0]

    @property
    def connection_count(self) -> int:
        """Open connections (leases kept for the offline grace period are not counted)."""
        return sum(1 for connection in self.connections if not connection.closing)


async def _read_connections(
    backend: BasePresenceBackend, keys: Sequence[str]
) -> tuple[float, list[list[ConnectionInfo]], dict[str, Availability]]:
    # One event loop for the whole page: the reads go out together, not one by one.
    results = await asyncio.gather(*(backend.user_connections(key) for key in keys))
    return await backend.now(), list(results), await backend.availability(keys)


class OnlineStatusAdminMixin(_ModelAdminBase):
    """Add live presence to a project's own user admin; put it first among the bases.

    It adds, to whatever the admin class already shows:

    - the ``online_now`` column: the live presence, read from the backend in one round trip
      for the whole changelist page; and ``online_in_db``, the database copy of
      ``is_online``, beside it when one is kept (``STORE``: the user model's field, or
      the package's table, read with the page's users in the same query);
    - the :class:`OnlineNowListFilter` ("online now"), and with ``STORE = "table"`` the
      :class:`OnlineInDbListFilter` ("online (DB)") too;
    - a "Connection monitor" page (view permission on the user model), with "Run a sweep
      now" and "Disconnect" buttons (change permission), linked from the changelist.

    Name ``online_now`` or ``online_in_db`` (or ``is_online``) in your own ``list_display``
    to place them yourself; set :attr:`presence_add_columns` to False to add neither.
    """

    #: Append ``online_now`` and ``online_in_db`` to ``list_display``, and the filter.
    presence_add_columns: bool = True
    #: Online users per page of the connection monitor.
    presence_monitor_per_page: int = 100
    #: Template of the connection monitor.
    presence_monitor_template: str = "django_presence/admin/monitor.html"
    #: Adds a "Connection monitor" link to the changelist's object tools.
    change_list_template = "django_presence/admin/user_change_list.html"

    # -- changelist ------------------------------------------------------------------------

    @admin.display(description=_("online now"), boolean=True)
    def online_now(self, obj: Any) -> bool | None:
        """Whether the user is online now; None (shown as unknown) if the backend is down."""
        if hasattr(obj, _ONLINE_ATTR):
            online: bool | None = getattr(obj, _ONLINE_ATTR)
            return online
        # Outside a changelist page (a detail view's readonly_fields): one lookup.
        try:
            return user_online_service.is_user_online(obj.pk)
        except Exception:
            # The backend (or the DB) is unreachable: the page says so instead of a 500.
            logger.exception("Could not read whether user %s is online", obj.pk)
            return None

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        """``list_display`` plus ``online_now`` and ``online_in_db`` (unless already there)."""
        fields = list(super().get_list_display(request))
        if self.presence_add_columns:
            if "online_now" not in fields:
                fields.append("online_now")
            copy = self._database_copy()
            if copy is not None and not {"online_in_db", copy.online_lookup} & set(fields):
                fields.append("online_in_db")
        return fields

    @admin.display(description=_("online (DB)"), boolean=True, ordering=_DB_ONLINE_ANNOTATION)
    def online_in_db(self, obj: Any) -> bool | None:
        """The database copy of ``is_online``, beside the live ``online_now``."""
        if hasattr(obj, _DB_ONLINE_ANNOTATION):
            value: bool | None = getattr(obj, _DB_ONLINE_ANNOTATION)
            return value
        copy = self._database_copy()
        return None if copy is None else copy.read(obj)[0]

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        """The admin's queryset, with the database copy's ``is_online`` in the same query."""
        queryset: models.QuerySet[Any] = super().get_queryset(request)
        copy = self._database_copy()
        if copy is None:
            return queryset
        if copy.kind == STORE_TABLE:
            queryset = queryset.select_related(TABLE_RELATION)
        # No row in the table (NULL) is offline, and sorts with the offline users.
        online = Coalesce(F(copy.online_lookup), Value(False))
        annotated: models.QuerySet[Any] = queryset.annotate(**{_DB_ONLINE_ANNOTATION: online})
        return annotated

    def get_list_filter(self, request: HttpRequest) -> list[Any]:
        """``list_filter`` plus :class:`OnlineNowListFilter` (unless already there).

        With ``STORE = "table"``, :class:`OnlineInDbListFilter` too.
        """
        filters = list(super().get_list_filter(request))
        if self.presence_add_columns and OnlineNowListFilter not in filters:
            filters.append(OnlineNowListFilter)
        copy = self._database_copy()
        if (
            self.presence_add_columns
            and copy is not None
            and copy.kind == STORE_TABLE
            and OnlineInDbListFilter not in filters
        ):
            filters.append(OnlineInDbListFilter)
        return filters

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """The changelist, with the live presence of the page's users read in one round trip."""
        changelist = super().get_changelist_instance(request)
        users = list(changelist.result_list)  # evaluated once; the template reuses these
        try:
            online = user_online_service.get_online_user_ids([user.pk for user in users])
        except Exception:
            # The backend (or the DB) is unreachable: the page says so instead of a 500.
            logger.exception("Could not read who is online for the admin changelist")
            online = None
        for user in users:
            setattr(user, _ONLINE_ATTR, None if online is None else user.pk in online)
        return changelist

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """The admin's actions plus "Disconnect the selected users everywhere".

        ``action_location`` is Django 6.1's (``ActionLocation``); older Django passes
        nothing. The disconnect action is a change-list action only.
        """
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(  # type: ignore[call-arg]  # Django 6.1+
                request, action_location=action_location
            )
        if (
            getattr(action_location, "value", "CHANGE_LIST") == "CHANGE_LIST"
            and self.presence_add_columns
            and self.actions is not None
            and self.has_change_permission(request)
        ):
            action = self.get_action("disconnect_users")
            if action is not None:
                actions["disconnect_users"] = action
        return actions

    @admin.action(description=_("Disconnect the selected users everywhere"))
    def disconnect_users(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        """Admin action: close every socket of the selected users (one call per user)."""
        closed = 0
        for pk in queryset.values_list("pk", flat=True):
            closed += user_online_service.disconnect_user(pk)
        logger.info("%s disconnected users from the admin: %d connections", request.user, closed)
        self.message_user(
            request,
            ngettext("Closed %(count)d connection.", "Closed %(count)d connections.", closed)
            % {"count": closed},
            messages.SUCCESS,
        )

    def _database_copy(self) -> DatabaseCopy | None:
        """The database copy, when one is kept and this admin's model is the user model."""
        if self.model is not get_user_model():
            return None
        return database_copy()

    # -- connection monitor ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        """The monitor's URLs, ahead of the model admin's own (which end in a catch-all)."""
        wrap = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}_presence"
        return [
            path("presence/", wrap(self.presence_monitor_view), name=prefix),
            path("presence/sweep/", wrap(self.presence_sweep_view), name=f"{prefix}_sweep"),
            path(
                "presence/reconcile/",
                wrap(self.presence_reconcile_view),
                name=f"{prefix}_reconcile",
            ),
            path(
                "presence/disconnect/",
                wrap(self.presence_disconnect_view),
                name=f"{prefix}_disconnect",
            ),
            *super().get_urls(),
        ]

    def _presence_url(self, suffix: str = "") -> str:
        name = f"{self.opts.app_label}_{self.opts.model_name}_presence{suffix}"
        return reverse(f"admin:{name}", current_app=self.admin_site.name)

    def presence_monitor_view(self, request: HttpRequest) -> HttpResponse:
        """Who is online now, and every connection they hold."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        backend = get_backend()
        try:
            keys = sorted(backend.all_online_user_ids_sync(), key=key_order)
            page = Paginator(keys, self.presence_monitor_per_page).get_page(request.GET.get("p"))
            rows = self._monitor_rows(backend, list(page.object_list)) if keys else []
        except Exception:
            # The backend (or the DB) is unreachable: the page says so instead of a 500.
            logger.exception("Could not read who is online for the connection monitor")
            messages.error(request, _("The presence backend is unavailable."))
            keys, rows = [], []
            page = Paginator(keys, self.presence_monitor_per_page).get_page(1)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Connection monitor"),
            "rows": rows,
            "page_obj": page,
            "online_count": len(keys),
            "backend_name": type(backend).__name__,
            "connection_ttl": presence_settings.CONNECTION_TTL,
            "can_change": self.has_change_permission(request),
            "sweep_url": self._presence_url("_sweep"),
            "reconcile_url": self._presence_url("_reconcile") if syncs_user_model() else "",
            "disconnect_url": self._presence_url("_disconnect"),
            "changelist_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
                current_app=self.admin_site.name,
            ),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.presence_monitor_template, context)

    def _monitor_rows(self, backend: BasePresenceBackend, keys: list[str]) -> list[MonitoredUser]:
        backend_now, per_user, found = async_to_sync(_read_connections)(backend, keys)
        # Lease times are on the backend's clock (Redis TIME, or a monotonic clock):
        # shown as this server's datetimes, through their offset from the backend's now.
        wall_now = timezone.now()

        def at(backend_time: float) -> datetime:
            return wall_now + timedelta(seconds=backend_time - backend_now)

        pks = {key: pk_or_none(key) for key in keys}
        users_query = self.model._default_manager.all()
        copy = self._database_copy()
        if copy is not None and copy.kind == STORE_TABLE:
            users_query = users_query.select_related(TABLE_RELATION)  # db_is_online, no N+1
        users = users_query.in_bulk([pk for pk in pks.values() if pk is not None])
        ttl = float(presence_settings.CONNECTION_TTL)
        rows = []
        for key, connections in zip(keys, per_user, strict=True):
            pk = pks[key]
            row = MonitoredUser(key, pk, users.get(pk) if pk is not None else None)
            availability = found.get(key)
            if availability is not None:
                row.state = availability.presence.state
                row.status, row.status_text = availability.status, availability.text
            data = availability.connections if availability is not None else {}
            for info in sorted(connections, key=lambda c: c.opened_at):
                said = data.get(info.connection_id)
                row.connections.append(
                    MonitoredConnection(
                        connection_id=info.connection_id,
                        server=info.server,
                        opened=at(info.opened_at),
                        expires=at(info.expires_at),
                        renewed=None if info.closing else at(info.expires_at - ttl),
                        closing=info.closing,
                        expired=info.expires_at <= backend_now,
                        opened_ago=duration(backend_now - info.opened_at),
                        renewed_ago=duration(backend_now - info.expires_at + ttl),
                        expires_in=duration(abs(info.expires_at - backend_now)),
                        device=said.device if said is not None else "",
                        activity=said.activity if said is not None else "",
                    )
                )
            rows.append(row)
        return rows

    def _post_only(self, request: HttpRequest) -> HttpResponse | None:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        return None

    def presence_sweep_view(self, request: HttpRequest) -> HttpResponse:
        """POST: remove expired connections now and apply the offline transitions."""
        refused = self._post_only(request)
        if refused is not None:
            return refused
        try:
            removed = user_online_service.sweep()
        except Exception:
            # The backend (or the DB) is unreachable: the page says so instead of a 500.
            logger.exception("A sweep requested from the admin failed")
            messages.error(request, _("The sweep failed: the presence backend is unavailable."))
        else:
            logger.info("%s ran a sweep from the admin: %d removed", request.user, removed)
            messages.success(
                request,
                ngettext(
                    "The sweep removed %(count)d expired connection.",
                    "The sweep removed %(count)d expired connections.",
                    removed,
                )
                % {"count": removed},
            )
        return HttpResponseRedirect(self._presence_url())

    def presence_reconcile_view(self, request: HttpRequest) -> HttpResponse:
        """POST: make ``is_online`` agree with the backend (``user_online_service.reconcile``)."""
        refused = self._post_only(request)
        if refused is not None:
            return refused
        try:
            result = user_online_service.reconcile()
        except Exception:
            # The backend or the database is down: say so on the page, log the cause.
            logger.exception("A reconcile requested from the admin failed")
            messages.error(request, _("The reconcile failed: see the server's log."))
        else:
            logger.info(
                "%s reconciled is_online from the admin: %d marked online, %d offline",
                request.user,
                len(result.marked_online),
                len(result.marked_offline),
            )
            messages.success(
                request,
                _("Marked %(online)d users online and %(offline)d offline.")
                % {"online": len(result.marked_online), "offline": len(result.marked_offline)},
            )
        return HttpResponseRedirect(self._presence_url())

    def presence_disconnect_view(self, request: HttpRequest) -> HttpResponse:
        """POST ``user_id``: close every connection of that user, on whatever server."""
        refused = self._post_only(request)
        if refused is not None:
            return refused
        key = request.POST.get("user_id", "")
        pk = pk_or_none(key) if key else None
        if pk is None:
            messages.error(request, _("No user to disconnect was given."))
            return HttpResponseRedirect(self._presence_url())
        try:
            closed = user_online_service.disconnect_user(pk)
        except Exception:
            # The backend (or the DB) is unreachable: the page says so instead of a 500.
            logger.exception("Disconnecting user %s from the admin failed", pk)
            messages.error(
                request, _("The presence backend is unavailable; nobody was disconnected.")
            )
        else:
            logger.info("%s disconnected user %s from the admin", request.user, pk)
            user = self.model._default_manager.filter(pk=pk).first()
            messages.success(
                request,
                ngettext(
                    "Closed %(count)d connection of %(user)s.",
                    "Closed %(count)d connections of %(user)s.",
                    closed,
                )
                % {"count": closed, "user": user if user else key},
            )
        return HttpResponseRedirect(self._presence_url())
