"""Request ids and structured logs.

Every HTTP request and WebSocket connection gets a request id (the caller's X-Request-ID when
it sends a sane one, else a new one), kept in a context variable, stamped on every log record
and echoed in the response. Log lines never carry patient data (names, MRNs, values): code
logs identifiers of devices and messages only, and tests capture the logs to check.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestIdMiddleware:
    """ASGI middleware: the request id for HTTP and WebSocket scopes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        current = given if _SANE.match(given) else uuid.uuid4().hex
        token = request_id.set(current)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", current.encode())],
                }
            await send(message)

        # A WebSocket's messages carry no headers to add the id to, and a dashboard's socket
        # sends every ward frame through here: it gets the server's own send.
        try:
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
        finally:
            request_id.reset(token)
