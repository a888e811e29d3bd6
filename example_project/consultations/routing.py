"""WebSocket routes of the consultations app."""

from django.urls import path

from .consumers import ConsultationConsumer

websocket_urlpatterns = [
    path(
        "ws/consultation/<int:consultation_id>/",
        ConsultationConsumer.as_asgi(),
        name="consultation_signalling",
    ),
]
