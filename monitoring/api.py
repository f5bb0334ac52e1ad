"""``POST /api/v1/ingest/``: where bedside devices post their readings.

Order of checks: method, credential present, media type, size, rate limit, then the body is
parsed and validated without touching the database. A valid message goes to a writer thread
in one hop (authentication, idempotency, insert: one transaction); an invalid one is only
answered with its 400 once the credential is known to be good, so an unauthenticated caller
learns nothing. The response is sent after commit; the live push and the evaluation request
follow, and their failure never turns an acknowledged message into an error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from monitoring.events import ward_vitals
from monitoring.hooks import observations_recorded
from monitoring.ingestion import MAX_BODY_BYTES, IngestError, message_parse
from monitoring.metrics import (
    EVALUATION_REQUEST_FAILURES,
    INGEST_LATENCY,
    INGEST_MESSAGES,
    INGEST_READINGS_ACCEPTED,
    INGEST_REJECTED,
)
from monitoring.models import token_digest
from monitoring.ratelimit import RateLimiter
from monitoring.services import (
    RecordedMessage,
    RecordOutcome,
    device_for_token,
    device_refusal_body,
    message_digest,
    observations_record,
)
from monitoring.writer import on_writer

logger = logging.getLogger(__name__)

AUTH_SCHEME = "Device"
_limiter = RateLimiter(
    rate=float(getattr(settings, "INGEST_RATE_PER_SECOND", 10)),
    burst=float(getattr(settings, "INGEST_BURST", 30)),
)
_in_flight = 0


def _answer(status: int, body: dict[str, Any], **headers: str) -> JsonResponse:
    INGEST_MESSAGES.labels(status=str(status)).inc()
    if status >= 400 and "code" in body:
        INGEST_REJECTED.labels(code=body["code"]).inc()
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = f'{AUTH_SCHEME} realm="ingest"'
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _refuse(status: int, code: str, detail: str, **headers: str) -> JsonResponse:
    return _answer(status, {"code": code, "detail": detail}, **headers)


def _token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme != AUTH_SCHEME or not token:
        return None
    return token


@csrf_exempt
async def ingest(request: HttpRequest) -> JsonResponse:
    started = time.perf_counter()
    try:
        return await _ingest(request)
    finally:
        INGEST_LATENCY.observe(time.perf_counter() - started)


async def _ingest(request: HttpRequest) -> JsonResponse:
    global _in_flight
    if request.method != "POST":
        return _refuse(405, "method_not_allowed", "Post device messages here.", Allow="POST")
    token = _token(request)
    if token is None:
        return _refuse(
            401,
            "missing_credentials",
            f"Send the device token as 'Authorization: {AUTH_SCHEME} <token>'.",
        )
    if request.content_type != "application/json":
        return _refuse(415, "unsupported_media_type", "Send the message as application/json.")
    charset = request.content_params.get("charset", "utf-8").lower()
    if charset not in {"utf-8", "utf8"}:
        return _refuse(415, "unsupported_media_type", "The message must be UTF-8 encoded.")
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        return _refuse(413, "payload_too_large", "A message is at most 1 MiB; split the batch.")

    digest = token_digest(token)
    wait = _limiter.retry_after(digest)
    if wait:
        return _refuse(
            429,
            "rate_limited",
            "This device is sending faster than its allowance; retry the same message later.",
            Retry_After=str(wait),
        )

    try:
        message = message_parse(body=body, now=timezone.now())
    except IngestError as error:
        device = await on_writer(device_for_token)(digest=digest)
        if device is None or not device["active"]:
            return _answer(401, device_refusal_body(device))
        return _answer(error.status, error.body())

    if _in_flight >= int(getattr(settings, "INGEST_MAX_PENDING", 2000)):
        return _refuse(
            503, "busy", "The portal is saturated; retry the same message.", Retry_After="1"
        )
    _in_flight += 1
    try:
        outcome: RecordOutcome = await on_writer(observations_record)(
            token_digest=digest,
            message=message,
            body_digest=message_digest(body),
            now=timezone.now(),
        )
    except Exception:
        # Nothing was acknowledged; the device keeps the message and retries it, and the
        # idempotency row makes a retry of a message whose commit did happen a replay.
        logger.exception("ingestion could not store a message")
        return _refuse(
            503,
            "storage_unavailable",
            "The message could not be stored; retry the same message.",
            Retry_After="5",
        )
    finally:
        _in_flight -= 1

    if outcome.recorded is not None:
        INGEST_READINGS_ACCEPTED.inc(len(message.readings))
        _after_commit(outcome.recorded)
    return _answer(outcome.status, outcome.body)


def _after_commit(recorded: RecordedMessage) -> None:
    ward_vitals.add(recorded)
    for receiver, result in observations_recorded.send_robust(
        sender=RecordedMessage, recorded=recorded
    ):
        if isinstance(result, Exception):
            # The message stays unevaluated in MariaDB; the catch-up evaluates it.
            EVALUATION_REQUEST_FAILURES.inc()
            logger.error(
                "after-commit hook %s failed",
                getattr(receiver, "__qualname__", receiver),
                exc_info=result,
            )
