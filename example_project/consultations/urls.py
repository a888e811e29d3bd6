"""URLs of the consultations app."""

from django.urls import path

from . import views

urlpatterns = [path("<int:pk>/", views.room, name="consultation_room")]
