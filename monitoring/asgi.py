"""The device endpoint's ASGI application: a size-capped body, then the endpoint, directly.

Django's default middleware stack alone halves a trivial async view's throughput (sessions,
CSRF, messages, auth do nothing for a device). Django's ASGI handler also spawns a thread
context per request and hops to a thread twice to close database connections the event loop
never opened (the endpoint's database work runs on the writer threads, monitoring/writer.py):
measured at ~460 µs of CPU per request. Building Django's request and response objects was
another tenth of the server's CPU at 300 devices (header decoding, an email parser for the
content type, the response's iteration). So this application reads the two headers the
endpoint needs from the ASGI scope, awaits ``monitoring.api.ingest_answer`` and writes its
JSON answer. Django also reads a whole request body before any view sees it, so the 1 MiB cap
is enforced here while reading.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from monitoring.api import Answer, ingest_answer
from monitoring.ingestion import MAX_BODY_BYTES

logger = logging.getLogger(__name__)

Scope = dict[str, Any]


async def send_json(
    send: Any, status: int, body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


_TOO_LARGE = {"code": "payload_too_large", "detail": "A message is at most 1 MiB; split the batch."}


class DeviceIngestApplication:
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        # As Django reads them: repeated headers joined with ",".
        wanted: dict[bytes, list[bytes]] = {b"authorization": [], b"content-type": []}
        declared = None
        for name, value in scope.get("headers", []):
            if name in wanted:
                wanted[name].append(value)
            elif name == b"content-length":
                declared = value
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await send_json(send, 413, _TOO_LARGE)
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
                await send_json(send, 413, _TOO_LARGE)
                return
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        try:
            answer = await ingest_answer(
                method=scope["method"].upper(),
                authorization=b",".join(wanted[b"authorization"]).decode("latin-1"),
                content_type=b",".join(wanted[b"content-type"]).decode("latin-1"),
                body=b"".join(chunks),
            )
        except Exception:
            # The endpoint answers every failure it can foresee; this is a bug, and it still
            # gets a JSON answer (never an HTML page a device cannot read).
            logger.exception("the ingestion endpoint failed")
            answer = Answer(
                500,
                {"code": "internal_error", "detail": "Unexpected error; retry the same message."},
            )
        await send_json(send, answer.status, answer.body, answer.headers)
