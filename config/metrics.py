"""Prometheus metrics at /metrics, for allowed addresses or a bearer token only.

Counters of this process (ingestion, pushes, sockets) come from ``prometheus_client``'s
registry; figures that span processes are read at scrape time from where they live: open
alerts and the catch-up backlog from MariaDB, evaluation lag from the evaluated messages of
the last minute, Celery task failures from Redis (workers count them there).
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
from collections.abc import Iterator
from typing import cast

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

TASK_FAILURES_KEY = "celery:task-failures"


def task_failures_key() -> str:
    return f"{getattr(settings, 'CACHE_KEY_PREFIX', 'portal')}:{TASK_FAILURES_KEY}"


class PortalCollector(Collector):
    """Figures read from MariaDB and Redis at scrape time."""

    def describe(self) -> list[GaugeMetricFamily]:
        # Registration asks for the metric names; answering here keeps it from querying the
        # database at import time.
        return [
            GaugeMetricFamily(name, "")
            for name in (
                "portal_open_alerts",
                "portal_catch_up_backlog_messages",
                "portal_alert_evaluation_lag_seconds",
                "portal_celery_task_failures",
            )
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from alerts.models import Alert
        from monitoring.models import IngestMessage

        open_alerts = GaugeMetricFamily(
            "portal_open_alerts", "Open (not resolved) alerts, by priority.", labels=["priority"]
        )
        counts = dict(
            Alert.objects.exclude(state=Alert.State.RESOLVED)
            .values_list("priority")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for priority in ("high", "medium", "low"):
            open_alerts.add_metric([priority], counts.get(priority, 0))
        yield open_alerts

        yield GaugeMetricFamily(
            "portal_catch_up_backlog_messages",
            "Device messages stored but not yet evaluated by the alert engine.",
            value=IngestMessage.objects.filter(evaluated_at__isnull=True).count(),
        )

        since = timezone.now() - dt.timedelta(minutes=1)
        # evaluated_at is not NULL here: the filter reads it (the type checker cannot know).
        lags = sorted(
            (cast(dt.datetime, evaluated) - received).total_seconds()
            for received, evaluated in IngestMessage.objects.filter(
                evaluated_at__gte=since
            ).values_list("received_at", "evaluated_at")
        )
        lag = GaugeMetricFamily(
            "portal_alert_evaluation_lag_seconds",
            "Time from storing a device message to evaluating it, last minute, by quantile.",
            labels=["quantile"],
        )
        for quantile in (0.5, 0.95, 0.99, 1.0):
            value = lags[min(len(lags) - 1, int(quantile * len(lags)))] if lags else 0.0
            lag.add_metric([str(quantile)], value)
        yield lag

        failures = GaugeMetricFamily(
            "portal_celery_task_failures",
            "Celery task failures counted by workers.",
            labels=["task"],
        )
        for task, count in _task_failures().items():
            failures.add_metric([task], count)
        yield failures


def _task_failures() -> dict[str, int]:
    if not settings.REDIS_URL:
        return {}
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        raw = client.hgetall(task_failures_key())
    except redis.RedisError:
        return {}
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


_collector = PortalCollector()
REGISTRY.register(_collector)


def _allowed(request: HttpRequest) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme == "Bearer" and hmac.compare_digest(given.strip(), token):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.METRICS_ALLOWED_NETWORKS)


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return JsonResponse(
            {"code": "forbidden", "detail": "Metrics are readable from allowed addresses only."},
            status=403,
        )
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
