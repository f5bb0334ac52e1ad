"""Helpers for tests that start real processes (daphne, a Celery worker) or post readings."""

from __future__ import annotations

import datetime as dt
import os

import httpx
from django.conf import settings


def child_process_environment(**extra: str) -> dict[str, str]:
    """The environment of a child process that must use this test run's database and Redis
    (Django renamed the database for the tests, so DATABASE_URL must name it)."""
    database = settings.DATABASES["default"]
    environment = dict(os.environ)
    environment.update(
        DJANGO_SETTINGS_MODULE="config.test_settings",
        DATABASE_URL=(
            f"mysql://{database['USER']}:{database['PASSWORD']}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 3306}/{database['NAME']}"
        ),
        TEST_REDIS_URL=settings.REDIS_URL,
    )
    environment.update(extra)
    return environment


async def post_spo2_series(
    client: httpx.AsyncClient,
    token: str,
    *,
    start: dt.datetime,
    seconds: int,
    value: float,
    prefix: str,
) -> None:
    """Post one SpO2 reading per second from ``start``, each its own message, all accepted."""
    for second in range(seconds):
        observed_at = (start + dt.timedelta(seconds=second)).isoformat()
        response = await client.post(
            "/api/v1/ingest/",
            json={
                "message_id": f"{prefix}-{second}",
                "observations": [
                    {"code": "59408-5", "value": value, "unit": "%", "observed_at": observed_at}
                ],
            },
            headers={"Authorization": f"Device {token}"},
        )
        assert response.status_code == 201, response.text
