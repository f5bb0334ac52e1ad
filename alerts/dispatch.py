"""Requesting evaluation from the ingestion process: coalesced, after commit, never blocking.

Ingestion's hook queues each committed message; every ``INTERVAL`` one Celery task is sent
with the queued message ids (one task per tick, not per message, let alone per reading). The
send runs in a thread so a slow or absent broker never stalls the event loop; if it fails, the
messages stay "not evaluated" in MariaDB and the catch-up evaluates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from django.conf import settings

from monitoring.metrics import EVALUATION_REQUEST_FAILURES
from monitoring.services import RecordedMessage

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.1
MAX_BATCH = 500


class EvaluationDispatcher:
    def __init__(self, *, interval: float = INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._pending: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._schedule: asyncio.Task[None] | None = None

    def add(self, message_pk: int) -> None:
        self._pending.append(message_pk)
        if self._task is None or self._task.done() or self._task.get_loop().is_closed():
            self._task = asyncio.get_running_loop().create_task(self._tick())
        if settings.CELERY_TASK_ALWAYS_EAGER and (
            self._schedule is None or self._schedule.done() or self._schedule.get_loop().is_closed()
        ):
            self._schedule = asyncio.get_running_loop().create_task(_embedded_schedule())

    async def _tick(self) -> None:
        while self._pending:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> int:
        """Send what is queued now; return how many message ids were handed to the broker."""
        sent = 0
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await asyncio.get_running_loop().run_in_executor(None, _broker.send, batch)
            except Exception:
                EVALUATION_REQUEST_FAILURES.inc()
                logger.warning(
                    "evaluation request for %d messages failed; the catch-up will evaluate them",
                    len(batch),
                    exc_info=True,
                )
                continue
            sent += len(batch)
        return sent


async def _embedded_schedule() -> None:
    """The embedded demo has no broker and so no beat: run beat's schedule in this process.

    Started by the first device message. In this process, so the alarms it raises reach the
    dashboards through the in-memory channel layer like every other event.
    """
    from config.celery import app

    app.loader.import_default_modules()
    entries = [
        (app.tasks[entry["task"]], float(entry["schedule"]))
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
    ]
    loop = asyncio.get_running_loop()
    due = [loop.time()] * len(entries)
    while True:
        for index, (task, interval) in enumerate(entries):
            if loop.time() >= due[index]:
                try:
                    await loop.run_in_executor(None, task.apply)
                except Exception:
                    logger.exception("scheduled task %s failed", task.name)
                due[index] = loop.time() + interval
        await asyncio.sleep(max(0.1, min(due) - loop.time()))


class _BrokerLink:
    """One broker connection kept across sends, dropped on any failure.

    Opening a connection per send (kombu's transport set-up, re-declaring the queue) was a
    tenth of the ingestion server's CPU at 300 devices (py-spy during ``bin/bench ingest``).
    A send never retries (``retry=False``): with the broker gone it fails fast and is
    counted, the connection is closed, and the next send opens a new one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self._url: str | None = None

    def send(self, batch: list[int]) -> None:
        from alerts.tasks import evaluate_messages

        app = evaluate_messages.app
        with self._lock:
            url = app.conf.broker_write_url or app.conf.broker_url
            if self._connection is not None and self._url != url:
                self.close()  # the broker was reconfigured
            if self._connection is None:
                self._connection, self._url = app.connection_for_write(), url
            try:
                evaluate_messages.apply_async(  # type: ignore[call-arg]  # connection: documented, not in the stubs
                    args=(batch,), retry=False, connection=self._connection
                )
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()


_broker = _BrokerLink()


evaluation_requests = EvaluationDispatcher()


def on_observations_recorded(sender: Any, recorded: RecordedMessage, **kwargs: Any) -> None:
    evaluation_requests.add(recorded.message_pk)
