"""ASGI entry point, served by daphne: HTTP to Django, WebSockets through origin and auth checks."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before anything imports models (the consumers below do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.observability import RequestIdMiddleware  # noqa: E402
from monitoring.asgi import DeviceIngestApplication  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402
from portal.wsauth import DashboardAuthMiddlewareStack  # noqa: E402

INGEST_PATH = "/api/v1/ingest/"
device_ingest_app = DeviceIngestApplication()


async def http_application(scope: dict, receive: object, send: object) -> None:
    """Devices get the lean path; everything else the full Django stack."""
    if scope["path"] == INGEST_PATH:
        await device_ingest_app(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


application = RequestIdMiddleware(
    ProtocolTypeRouter(
        {
            "http": http_application,
            "websocket": AllowedHostsOriginValidator(
                DashboardAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
