"""The ingestion write path: a few long-lived threads, each with its own MariaDB connection.

Under ASGI every ``sync_to_async`` call normally lands on a fresh thread with fresh database
connections (about two TCP connects and ten statements per request on the MySQL backend), and
``CONN_MAX_AGE`` leaks connections there (Django ticket 33497). Here the threads live as long
as the process, so their connections do too: one thread hop and one transaction per message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import OperationalError, connection

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# MySQL client errors meaning "the connection is gone": server restarted, idle timeout,
# network cut. A write that failed this way is retried once on a new connection; that is safe
# even when the commit itself was lost, because the message's idempotency row makes the
# retry a replay.
_CONNECTION_LOST = {2006, 2013, 2055}

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _writer_threads() -> int:
    if connection.vendor == "sqlite":
        return 1  # SQLite has one writer; more threads would only wait on its lock
    return int(getattr(settings, "INGEST_WRITER_THREADS", 4))


def writer_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=_writer_threads(), thread_name_prefix="ingest-writer"
            )
        return _executor


def _with_reconnect(function: Callable[P, R]) -> Callable[P, R]:
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except OperationalError as error:
            if error.args and error.args[0] in _CONNECTION_LOST:
                logger.warning("ingestion writer lost its database connection; reconnecting")
                connection.close()
                return function(*args, **kwargs)
            connection.close()
            raise

    return run


def on_writer(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` (which holds one transaction) on a writer thread, from async code."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await sync_to_async(
            _with_reconnect(function), thread_sensitive=False, executor=writer_executor()
        )(*args, **kwargs)

    return call  # type: ignore[return-value]
