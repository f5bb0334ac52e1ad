"""Liveness (/healthz) and readiness (/readyz) for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

CHECK_TIMEOUT_SECONDS = 2.0


@never_cache
async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving (no dependency is touched)."""
    return JsonResponse({"status": "ok"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()  # a request thread's connection must not outlive the check


async def _redis(url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(
        url, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _check(name: str, probe: Any) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except Exception as error:
        return name, {"status": "down", "error": type(error).__name__}
    return name, {"status": "ok", "ms": round((time.perf_counter() - started) * 1000, 1)}


@never_cache
async def readyz(request: HttpRequest) -> JsonResponse:
    """MariaDB, the channel layer's Redis and the Celery broker each reachable: 200, else 503.

    The embedded demo (no Redis, in-process tasks) reports those components as "embedded".
    """
    checks = [_check("database", sync_to_async(_database, thread_sensitive=False)())]
    components: dict[str, dict[str, Any]] = {}
    if settings.REDIS_URL:
        checks.append(_check("channel_layer", _redis(settings.REDIS_URL)))
    else:
        components["channel_layer"] = {"status": "embedded"}
    if settings.CELERY_BROKER_URL.startswith("redis"):
        checks.append(_check("broker", _redis(settings.CELERY_BROKER_URL)))
    else:
        components["broker"] = {
            "status": "embedded" if not settings.CELERY_BROKER_URL else "unchecked"
        }
    components.update(dict(await asyncio.gather(*checks)))
    ready = all(c["status"] != "down" for c in components.values())
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "components": components},
        status=200 if ready else 503,
    )
