"""Suite-wide fixtures. The suite runs against the real MariaDB and Redis only."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache


def _unreachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as error:
        return f"{host}:{port} ({error})"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail at once, naming the service, when MariaDB or Redis is unreachable."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.mysql":
        pytest.exit("The test suite runs on MariaDB only; set DATABASE_URL=mysql://...", 3)
    problems = []
    where = _unreachable(f"mysql://{database['HOST']}:{database['PORT'] or 3306}", 3306)
    if where:
        problems.append(f"MariaDB is unreachable at {where}")
    where = _unreachable(settings.REDIS_URL, 6379)
    if where:
        problems.append(f"Redis is unreachable at {where}")
    if problems:
        pytest.exit("; ".join(problems) + ". Start it (see README) and run again.", 3)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # The suite's own Redis database (see config/test_settings.py): rate limits and
    # throttles from one test must not leak into the next.
    cache.clear()
    # A transactional test's flush recreates content types under new ids; the change history
    # (django-auditlog) must not reuse ids cached before it.
    ContentType.objects.clear_cache()
    yield
