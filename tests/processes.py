"""Helpers for tests that start real processes (daphne, a Celery worker) or post readings."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]


def python_code_run(
    code: str, *, environment: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a fresh interpreter at the repository's root, as daphne or a
    Celery worker would start there: output captured, a failure returned rather than raised."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def embedded_demo_environment(database: Path) -> dict[str, str]:
    """The environment of the embedded demo (``bin/demo`` without servers) on the SQLite file
    ``database``: no Redis, tasks run in-process."""
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings",
        PORTAL_MODE="development",
        DEBUG="false",
        DATABASE_URL=f"sqlite:///{database}",
        REDIS_URL="",
        LOG_LEVEL="WARNING",
    )


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def asgi_serving(
    application: str,
    *,
    ready_path: str,
    environment: dict[str, str],
    server_program: str = "daphne",
) -> Iterator[str]:
    """daphne (or uvicorn, as compose's ``ingest`` runs it) serving ``application``
    (``module:attribute``) on a free port; yields its URL once ``GET ready_path`` answers 200,
    and stops it afterwards."""
    port = free_port()
    if server_program == "uvicorn":
        argv = ["uvicorn", "--host=127.0.0.1", f"--port={port}", "--lifespan=off", application]
    else:
        argv = ["daphne", "-b", "127.0.0.1", "-p", str(port), application]
    server = subprocess.Popen(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    assert server.stdout is not None
    # Keep reading its output, so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: output.extend(server.stdout or []), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"{server_program} did not start:\n" + "".join(output[-40:]))
        time.sleep(0.2)
    try:
        yield url
    finally:
        process_stop(server)


def process_stop(process: subprocess.Popen[str], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


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
