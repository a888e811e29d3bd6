"""Admin of the users app: the stock user admin plus live presence."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from django_presence.admin import OnlineStatusAdminMixin

from .models import User


@admin.register(User)
class PlatformUserAdmin(OnlineStatusAdminMixin, UserAdmin):
    """Adds the live "online now" column and filter, and the connection monitor."""

    list_display = ("username", "is_staff", "last_seen")
    list_filter = ("is_staff",)
