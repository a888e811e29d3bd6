"""The example platform's pages: dashboard, messages, notifications, groups."""

from __future__ import annotations

from typing import Any

from consultations.models import Consultation
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from django_presence.conf import presence_settings
from django_presence.services import user_messaging_service, user_online_service

from .tokens import issue_access_token


def _people(request: HttpRequest) -> Any:
    return get_user_model().objects.order_by("username")


@require_GET
@never_cache
def token(request: HttpRequest) -> JsonResponse:
    """A fresh short-lived access token for the logged-in user's WebSocket connections.

    presence.js asks for one before every (re)connection, so an expired token never
    stops a page from reconnecting. A logged-out browser gets 401, not a login page.
    """
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    value, exp = issue_access_token(request.user)
    return JsonResponse({"token": value, "exp": exp})


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Everybody with a live online dot and last-seen time."""
    user = request.user
    consultations = Consultation.objects.filter(doctor=user) | Consultation.objects.filter(
        patient=user
    )
    return render(
        request,
        "users/dashboard.html",
        {
            "people": _people(request),
            "consultations": consultations.select_related("doctor", "patient"),
            # The user's own status as the backend keeps it (it outlives connections);
            # the page follows the ``status`` frames from then on.
            "me": user_online_service.get_presence([user.pk])[user.pk],
            "idle_after": round(presence_settings.IDLE_AFTER),
        },
    )


@login_required
def direct_messages(request: HttpRequest) -> HttpResponse:
    """Send and receive direct messages over the ``ws/user/`` socket."""
    return render(
        request, "users/messages.html", {"people": _people(request).exclude(pk=request.user.pk)}
    )


@login_required
@require_http_methods(["GET", "POST"])
def notifications(request: HttpRequest) -> HttpResponse:
    """Notifications as they arrive; staff send one to a user, or a system broadcast."""
    if request.method == "POST":
        return _staff_send(request)
    return render(request, "users/notifications.html", {"people": _people(request)})


def _staff_send(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff send notifications and broadcasts.")
    text = request.POST.get("message", "").strip()
    if not text:
        messages.error(request, "Write a message first.")
        return redirect("notifications")
    if request.POST.get("action") == "broadcast":
        user_messaging_service.broadcast_system_message_sync(
            text, sent_by=request.user.get_username()
        )
        messages.success(request, "System broadcast sent to everybody online.")
    else:
        target = _people(request).filter(pk=request.POST.get("user_id") or None).first()
        if target is None:
            messages.error(request, "Choose who to notify.")
            return redirect("notifications")
        title = request.POST.get("title", "").strip() or "Notification"
        # The service's sync twin: safe from a sync view under ASGI or WSGI alike.
        user_messaging_service.send_notification_to_user_sync(
            target.pk,
            title,
            text,
            sent_by=request.user.get_username(),
        )
        messages.success(request, f"Notification sent to {target.get_username()}.")
    return redirect("notifications")


@login_required
def groups(request: HttpRequest) -> HttpResponse:
    """Join groups, see who is in them, and talk to them."""
    return render(request, "users/groups.html", {"people": _people(request)})
