"""URLs of the users app."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("token/", views.token, name="token"),
    path("messages/", views.direct_messages, name="messages"),
    path("notifications/", views.notifications, name="notifications"),
    path("groups/", views.groups, name="groups"),
]
