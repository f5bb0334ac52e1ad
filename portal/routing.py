"""WebSocket routes."""

from __future__ import annotations

from django.urls import path

from portal.consumers import WardConsumer

websocket_urlpatterns = [
    path("ws/wards/<slug:ward_code>/", WardConsumer.as_asgi()),
]
