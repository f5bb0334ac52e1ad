"""The device endpoint's ASGI application: a size-capped body and Django without middleware.

Django's default middleware stack alone halves a trivial async view's throughput (sessions,
CSRF, messages, auth do nothing for a device), and Django reads a whole request body before
any view sees it, so the 1 MiB cap is enforced here while reading.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

from monitoring.ingestion import MAX_BODY_BYTES

Scope = dict[str, Any]


class _HandlerWithoutMiddleware(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response_async)


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
        self.django = _HandlerWithoutMiddleware()

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
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.django(scope, replay, send)
