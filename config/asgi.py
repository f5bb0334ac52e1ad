"""ASGI entry points, served by daphne.

``application``: everything (pages, REST, admin, dashboards' WebSockets through origin and auth
checks, device ingestion). ``ingest_application``: device ingestion and the health probes only,
for a listener of its own (docker/compose.yml's ``ingest``): clinicians' dashboards no longer
share the devices' event loop, and the device network reaches nothing else. (The processes
still share the machine's cores: docs/scaling.md.)
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before anything imports models (the consumers below do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from config.collector import FullCollectionClock, collector_tune  # noqa: E402
from config.observability import RequestIdMiddleware  # noqa: E402
from monitoring.asgi import DeviceIngestApplication, send_json  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402
from portal.wsauth import DashboardAuthMiddlewareStack  # noqa: E402

ASGIReceive = Callable[[], Awaitable[Mapping[str, Any]]]
ASGISend = Callable[[Mapping[str, Any]], Awaitable[None]]

collector_tune(settings.GC_THRESHOLDS)


def autobahn_plain_log_arguments() -> None:
    """Stop autobahn colouring the arguments of its debug log calls, which it builds for
    every frame even when debug logging is off (its debug lines, if enabled, lose colour).

    autobahn (under daphne's WebSockets) builds ``hltype``/``hlval`` arguments for a
    ``log.debug`` on every frame it sends, whatever the log level, and with click installed
    each is an ANSI-styled string (``click.style``): 7 % of the dashboards' daphne's time while
    it fans out to 1,000 dashboards (bench fanout --profile, docs/scaling.md). Without click
    autobahn passes the plain text; the flag is the one autobahn sets when click is missing,
    and ``tests/config/test_autobahn_logging.py`` (a frame through ``sendData``) fails if an
    upgrade renames it.
    """
    import autobahn.util

    autobahn.util._HAS_CLICK = False


autobahn_plain_log_arguments()

INGEST_PATH = "/api/v1/ingest/"
device_ingest_app = DeviceIngestApplication()


async def http_application(scope: dict, receive: ASGIReceive, send: ASGISend) -> None:
    """Devices get the lean path; everything else the full Django stack."""
    if scope["path"] == INGEST_PATH:
        await device_ingest_app(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


application = FullCollectionClock(
    RequestIdMiddleware(
        ProtocolTypeRouter(
            {
                "http": http_application,
                "websocket": AllowedHostsOriginValidator(
                    DashboardAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
                ),
            }
        )
    ),
    every=settings.GC_FULL_COLLECTION_SECONDS,
)


# The probes a container orchestrator and Prometheus call on every listener (each daphne
# process has metrics of its own).
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_ONLY_INGEST = {
    "code": "not_found",
    "detail": f"This listener takes device readings only: POST {INGEST_PATH}",
}


async def ingest_http_application(scope: dict, receive: ASGIReceive, send: ASGISend) -> None:
    if scope["path"] == INGEST_PATH:
        await device_ingest_app(scope, receive, send)
    elif scope["path"] in PROBE_PATHS:
        await django_asgi_app(scope, receive, send)
    else:
        await send_json(send, 404, _ONLY_INGEST)


async def websocket_refused(scope: dict, receive: Any, send: Any) -> None:
    """No dashboards here: the handshake is refused (daphne answers it with 403)."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 4404})


# Device ingestion on a listener of its own. With one daphne for everything, a thousand
# dashboards (or their reconnect storm) took the event loop the devices' requests wait on:
# acknowledgements fell up to a minute behind on a saturated 2-core node (bench fanout,
# docs/scaling.md).
ingest_application = FullCollectionClock(
    RequestIdMiddleware(
        ProtocolTypeRouter({"http": ingest_http_application, "websocket": websocket_refused})
    ),
    every=settings.GC_FULL_COLLECTION_SECONDS,
)
