"""The evaluation requests' broker connection: kept across sends, renewed after an outage.

A private redis-server (not the shared one the rest of the suite uses) is stopped and started
again under the dispatcher, so the outage is real: a refused connection, not a mock.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.test import override_settings

from alerts.dispatch import EvaluationDispatcher
from config.celery import app
from monitoring.metrics import EVALUATION_REQUEST_FAILURES


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is installed with Redis (.ci/run installs it)"
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), *options, "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def queued(self) -> int:
        return int(redis.Redis.from_url(self.url).llen("celery"))

    def connections_received(self) -> int:
        stats = redis.Redis.from_url(self.url).info("stats")
        return int(stats["total_connections_received"]) - 1  # not counting this one


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    reachable = app.conf.broker_url
    app.conf.broker_url = server.url
    try:
        yield server
    finally:
        app.conf.broker_url = reachable
        server.stop()


@pytest.mark.asyncio
@override_settings(CELERY_TASK_ALWAYS_EAGER=False)
async def test_it_keeps_one_broker_connection_and_renews_it_after_the_broker_restarts(
    private_redis: PrivateRedis,
) -> None:
    dispatcher = EvaluationDispatcher(interval=3600)  # flushed by hand below
    failures = EVALUATION_REQUEST_FAILURES._value.get()

    dispatcher._pending = [1, 2]
    assert await dispatcher.flush() == 2
    opened = private_redis.connections_received()
    dispatcher._pending = [3]
    assert await dispatcher.flush() == 1
    assert private_redis.connections_received() == opened + 1  # only the stats query's own
    assert private_redis.queued() == 2  # one task per flush, on the broker

    private_redis.stop()
    dispatcher._pending = [4]
    assert await dispatcher.flush() == 0  # refused, counted, left to the catch-up
    assert EVALUATION_REQUEST_FAILURES._value.get() == failures + 1

    private_redis.start()  # same port, empty
    dispatcher._pending = [5]
    assert await dispatcher.flush() == 1
    assert private_redis.queued() == 1
    assert EVALUATION_REQUEST_FAILURES._value.get() == failures + 1
