"""URLs of the consultations app."""

from django.urls import path

from . import views

urlpatterns = [
    path("<int:pk>/", views.room, name="consultation_room"),
    path("<int:pk>/waiting-room/", views.waiting_room, name="waiting_room"),
]
