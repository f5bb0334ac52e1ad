"""The ingestion write path: a few long-lived threads, each with its own MariaDB connection.

One thread hop and one transaction per group of messages (``config.dbthreads``). A message
that finds one of the ``INGEST_WRITE_LANES`` free is stored at once, alone; messages that
arrive while every lane has a transaction in progress wait for the next lane to finish, which
stores all of them (up to the caps below) in one transaction
(``monitoring.services.observations_record_group``). So an idle portal stores each message as
it comes, and a busy one pays the per-transaction costs (the thread hop, the device lookup,
the commit and its round trips) once per group: under 300 devices beside 1,000 dashboards
MariaDB's CPU fell by a quarter (docs/scaling.md, ninth session). Each message is answered
only once its group has committed, and a group that cannot commit whole is stored message by
message, so each answer is the one the message would have had alone.

A write that failed because the connection was lost is retried once on a new connection; that
is safe even when the commit itself was lost, because the message's idempotency row makes the
retry a replay.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from django.conf import settings

from config.dbthreads import DatabaseThreads
from monitoring.metrics import INGEST_GROUP_SIZE
from monitoring.services import (
    MessageToRecord,
    RecordedMessage,
    RecordOutcome,
    observations_record_group,
)

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

writer_threads = DatabaseThreads(
    "ingest-writer", lambda: int(getattr(settings, "INGEST_WRITER_THREADS", 4))
)

# A group's caps: its transaction stays short (a message holds at most 1,000 readings).
GROUP_MAX_MESSAGES = 64
GROUP_MAX_READINGS = 2000


def on_writer(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run ``function`` (which holds one transaction) on a writer thread, from async code."""
    return writer_threads.run(function)


# Each group handles its own lost connection (message by message), so no retry around it.
_store_group = writer_threads.run(observations_record_group, retry_lost_connection=False)

AfterCommit = Callable[[RecordedMessage], None]


@dataclass(frozen=True, slots=True)
class _Waiting:
    item: MessageToRecord
    future: asyncio.Future[RecordOutcome]
    after_commit: AfterCommit


class GroupWriter:
    """Stores device messages for one event loop, grouped while its lanes are busy."""

    def __init__(self) -> None:
        self._waiting: deque[_Waiting] = deque()
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        wanted = int(getattr(settings, "INGEST_WRITE_LANES", 2))
        self.lanes = max(1, min(wanted, writer_threads.workers()))

    async def record(self, item: MessageToRecord, after_commit: AfterCommit) -> RecordOutcome:
        """Store ``item`` (alone or in a group) and return its outcome once committed; raise
        what storing it alone raised. ``after_commit`` gets what a newly stored message
        changed, once committed, before this returns: also when the caller was cancelled
        meanwhile (a device hanging up), since its message is stored all the same."""
        future: asyncio.Future[RecordOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, future, after_commit))
        self._start()
        return await future

    def _start(self) -> None:
        while self._waiting and self._busy < self.lanes:
            group = self._take()
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._store(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting]:
        group = [self._waiting.popleft()]
        readings = len(group[0].item.message.readings)
        while self._waiting and len(group) < GROUP_MAX_MESSAGES:
            more = len(self._waiting[0].item.message.readings)
            if readings + more > GROUP_MAX_READINGS:
                break
            group.append(self._waiting.popleft())
            readings += more
        return group

    async def _store(self, group: list[_Waiting]) -> None:
        INGEST_GROUP_SIZE.observe(len(group))
        outcomes: list[RecordOutcome | Exception]
        try:
            outcomes = await _store_group([waiting.item for waiting in group])
        except asyncio.CancelledError:  # the loop is closing
            self._busy -= 1
            for waiting in group:
                waiting.future.cancel()
            raise
        except Exception as error:  # the thread hop itself failed
            outcomes = [error] * len(group)
        self._busy -= 1
        try:
            for waiting, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    if not waiting.future.done():
                        waiting.future.set_exception(outcome)
                    continue
                if outcome.recorded is not None:
                    try:
                        waiting.after_commit(outcome.recorded)
                    except Exception:
                        logger.exception("an ingestion after-commit step failed")
                if not waiting.future.done():
                    waiting.future.set_result(outcome)
        finally:
            # Whatever happened above, no caller waits forever.
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.set_exception(RuntimeError("the message's group failed"))
            self._start()


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupWriter] = (
    weakref.WeakKeyDictionary()
)


def group_writer() -> GroupWriter:
    """The group writer of the running event loop (a server has one; tests start one each)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = GroupWriter()
    return writer
