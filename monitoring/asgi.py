"""The device endpoint's ASGI application: a size-capped body, then the view, directly.

Django's default middleware stack alone halves a trivial async view's throughput (sessions,
CSRF, messages, auth do nothing for a device). Django's ASGI handler also spawns a thread
context per request and hops to a thread twice to close database connections the event loop
never opened (the view's database work runs on the writer threads, monitoring/writer.py):
measured at ~460 µs of CPU per request. So this application builds Django's ASGIRequest and
awaits the async view itself. Django also reads a whole request body before any view sees it,
so the 1 MiB cap is enforced here while reading.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import JsonResponse

from monitoring.api import ingest
from monitoring.ingestion import MAX_BODY_BYTES

logger = logging.getLogger(__name__)

Scope = dict[str, Any]


class _ResponseSender(ASGIHandler):
    """Only for ``send_response``: Django's own writing of a response to ASGI."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._middleware_chain = None


async def _send_json(send: Any, status: int, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


_TOO_LARGE = {"code": "payload_too_large", "detail": "A message is at most 1 MiB; split the batch."}


class DeviceIngestApplication:
    def __init__(self) -> None:
        self.sender = _ResponseSender()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _send_json(send, 413, _TOO_LARGE)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _send_json(send, 413, _TOO_LARGE)
                return
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        request = ASGIRequest(scope, io.BytesIO(b"".join(chunks)))
        try:
            response = await ingest(request)
        except Exception:
            # The view answers every failure it can foresee; this is a bug, and it still gets
            # a JSON answer (never an HTML page a device cannot read).
            logger.exception("the ingestion view failed")
            response = JsonResponse(
                {"code": "internal_error", "detail": "Unexpected error; retry the same message."},
                status=500,
            )
        await self.sender.send_response(response, send)
