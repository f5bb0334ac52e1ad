"""Database work from async code on a few long-lived threads, each with its own connection.

Under ASGI every ``sync_to_async`` call lands either on a fresh thread with a fresh database
connection (``thread_sensitive=False``) or on the one thread that all thread-sensitive calls
of the process share (Channels' ``database_sync_to_async``), which opens and closes a
connection around every call. The first costs a TCP connect and the session set-up statements
per call, and ``CONN_MAX_AGE`` leaks connections there (Django ticket 33497); the second
serialises every caller behind the slowest one: a dashboard's login check waited behind other
wards' snapshots there, and a reconnect storm connected four dashboards a second (bench
fanout). Here a named pool's threads live as long as the process, so their connections do
too, and pools do not wait on each other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import OperationalError, connection

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# MySQL client errors meaning "the connection is gone": server restarted, idle timeout,
# network cut.
CONNECTION_LOST = frozenset({2006, 2013, 2055})


def reconnecting(function: Callable[P, R], *, name: str, retry: bool = True) -> Callable[P, R]:
    """``function``, run again on a new connection when it fails because the connection was
    lost (if ``retry``). Any other ``OperationalError`` also closes the connection, so the
    thread's next call starts clean, and propagates."""

    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except OperationalError as error:
            connection.close()
            if retry and error.args and error.args[0] in CONNECTION_LOST:
                logger.warning("%s lost its database connection; reconnecting", name)
                return function(*args, **kwargs)
            raise

    return guarded


class DatabaseThreads:
    """A named pool of ``size()`` threads (one on SQLite, which has a single writer)."""

    def __init__(self, name: str, size: Callable[[], int]) -> None:
        self.name = name
        self._size = size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def workers(self) -> int:
        """The pool's threads (its size when it starts)."""
        return 1 if connection.vendor == "sqlite" else max(1, self._size())

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.workers(), thread_name_prefix=self.name
                )
            return self._executor

    def run(
        self, function: Callable[P, R], *, retry_lost_connection: bool = True
    ) -> Callable[P, Awaitable[R]]:
        """``function`` as a coroutine function that runs on this pool.

        A call that fails because the connection was lost is run again on a new connection
        when ``retry_lost_connection`` (the default; pass False for a write that must not be
        repeated). Any other ``OperationalError`` also closes the connection, so the thread's
        next call starts clean, and propagates.
        """
        guarded = reconnecting(function, name=self.name, retry=retry_lost_connection)

        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return await sync_to_async(guarded, thread_sensitive=False, executor=self.executor())(
                *args, **kwargs
            )

        return call
