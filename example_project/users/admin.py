"""Admin of the users app."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import User


@admin.register(User)
class PlatformUserAdmin(UserAdmin):
    """The stock user admin, showing presence."""

    list_display = ("username", "is_staff", "is_online", "last_seen")
    list_filter = ("is_online", "is_staff")
