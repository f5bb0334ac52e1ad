"""The ingestion write path: a few long-lived threads, each with its own MariaDB connection.

One thread hop and one transaction per message (``config.dbthreads``). A write that failed
because the connection was lost is retried once on a new connection; that is safe even when
the commit itself was lost, because the message's idempotency row makes the retry a replay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from django.conf import settings

from config.dbthreads import DatabaseThreads

P = ParamSpec("P")
R = TypeVar("R")

writer_threads = DatabaseThreads(
    "ingest-writer", lambda: int(getattr(settings, "INGEST_WRITER_THREADS", 4))
)


def on_writer(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run ``function`` (which holds one transaction) on a writer thread, from async code."""
    return writer_threads.run(function)
