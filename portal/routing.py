"""WebSocket routes (the live dashboard issue adds the ward consumer)."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
