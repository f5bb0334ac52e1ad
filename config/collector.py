"""The cyclic garbage collector's pace in the long-running server processes.

CPython's default thresholds (700, 10, 10) run a young collection every 700 net allocations of
container objects. The dashboards' daphne holds about 170,000 tracked objects with a thousand
sockets open, and at four frames a second per socket so many short-lived objects were caught
alive by those frequent young collections and promoted that a full collection ran every ~7 s,
each stopping the event loop for 140-210 ms with nothing to free (``collected=0``): the spikes
in the tail of publish → screen latency (bench fanout, timed with ``gc.callbacks``).

With a first threshold of 50,000, nearly every such object is freed by reference counting
before a young collection sees it, so few are promoted and the full collections stop coming
every few seconds: in the same 30 s window none ran. With 1,000 dashboards and 300 devices
(medians of 3, docs/scaling.md), publish → screen p99 went from 323 ms to 139 ms and reading →
screen p99 from 499 ms to 348 ms (with the clock below as well, in 60 s windows that each hold
one of its collections: 174 ms and 373 ms).

Fewer promotions also mean fewer full collections, and only a full collection frees cycles
among objects that had lived long enough to reach the old generation: the sockets of
dashboards that were open for minutes. Ten reconnect storms of 1,000 dashboards, 20 s apart,
took the dashboards' daphne from 163 to 280 MiB with these thresholds alone (145 MiB
throughout with CPython's). So each process runs a full collection every
``GC_FULL_COLLECTION_SECONDS`` (default 60): memory is reclaimed on a clock (25 storms levelled
at 225 MiB), and the event loop pauses for it once a minute rather than every few seconds.

The clock runs where the process's own code runs, never on a thread of its own: finalizers of
the freed objects (an asyncio stream closing its transport through ``loop.call_soon``, which is
not thread-safe, and under uvloop not safe without the GIL) run on the event loop, as they
would have under CPython's own collections there. ASGI servers: ``FullCollectionClock`` wraps
the application and schedules itself on the loop of the first request. Celery pool processes:
``full_collection_if_due`` after each task, in the process that ran it.

``GC_THRESHOLDS`` (three positive integers) sets other thresholds; ``GC_THRESHOLDS=default``
keeps CPython's, and then no clock is needed or started.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

THRESHOLDS_DEFAULT = (50_000, 20, 10)
# gc.set_threshold takes C ints; past this a young collection would as good as never run.
THRESHOLD_MAX = 10_000_000


def thresholds_parse(value: str) -> tuple[int, int, int] | None:
    """``GC_THRESHOLDS`` as three positive integers; None for "default" (CPython's own)."""
    if value.strip().lower() == "default":
        return None
    try:
        parts = tuple(int(part) for part in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(1 <= part <= THRESHOLD_MAX for part in parts):
        # 0 would switch the collector off: cyclic garbage would grow without bound.
        raise ImproperlyConfigured(
            f"GC_THRESHOLDS must be three integers from 1 to {THRESHOLD_MAX:,} such as "
            f'"50000,20,10", or "default"; got "{value}"'
        )
    return parts[0], parts[1], parts[2]


def collector_tune(thresholds: Sequence[int] | None) -> None:
    """Apply the settings' thresholds to this process (None: leave CPython's)."""
    if thresholds is not None:
        gc.set_threshold(*thresholds)


class FullCollectionClock:
    """ASGI middleware: a full collection every ``every`` seconds on the event loop that serves
    the application (none when ``every`` is None: CPython's thresholds need no clock).

    It starts with the first request or socket on a loop; a process with no traffic makes no
    garbage to collect. One clock per process, on the loop it last saw."""

    def __init__(self, application: Any, *, every: float | None) -> None:
        self.application = application
        self.every = every

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if self.every is not None:
            loop = asyncio.get_running_loop()
            if _clock.loop is not loop:
                _clock.loop = loop
                loop.call_later(self.every, _collect_on, loop, self.every)
                logger.info("full collections every %g s on this process's event loop", self.every)
        return await self.application(scope, receive, send)


class _Clock:
    loop: asyncio.AbstractEventLoop | None = None
    next_due: float | None = None


_clock = _Clock()


def _collect_on(loop: asyncio.AbstractEventLoop, every: float) -> None:
    if _clock.loop is not loop:
        return  # another loop took over (tests run many)
    try:
        gc.collect()
    except Exception:  # a finalizer's error must not stop the clock
        logger.exception("a full collection failed")
    finally:
        loop.call_later(every, _collect_on, loop, every)


def full_collection_if_due(every: float) -> bool:
    """Run a full collection when ``every`` seconds have passed since the last (or since the
    first call); for a Celery pool process, after each of its tasks. True if it ran."""
    now = time.monotonic()
    if _clock.next_due is None:
        _clock.next_due = now + every
        return False
    if now < _clock.next_due:
        return False
    _clock.next_due = now + every
    gc.collect()
    return True
