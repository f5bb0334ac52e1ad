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
(medians of 3, docs/scaling.md), publish → screen p99 went from 323 ms to 139 ms and reading
→ screen p99 from 499 ms to 348 ms.

Fewer promotions also mean fewer full collections, and only a full collection frees cycles
among objects that had lived long enough to reach the old generation: the sockets of
dashboards that were open for minutes. Ten reconnect storms of 1,000 dashboards, 20 s apart,
took the dashboards' daphne from 162 to 280 MiB with these thresholds alone (145 MiB
throughout with CPython's). So a thread of each process runs a full collection every
``GC_FULL_COLLECTION_SECONDS`` (default 60): memory is reclaimed on a clock, and the event loop
pauses for it once a minute rather than every few seconds.

``GC_THRESHOLDS`` (three positive integers) sets other thresholds; ``GC_THRESHOLDS=default``
keeps CPython's, and then no clock is needed or started.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Sequence

from django.core.exceptions import ImproperlyConfigured

THRESHOLDS_DEFAULT = (50_000, 20, 10)


def thresholds_parse(value: str) -> tuple[int, int, int] | None:
    """``GC_THRESHOLDS`` as three positive integers; None for "default" (CPython's own)."""
    if value.strip().lower() == "default":
        return None
    try:
        parts = tuple(int(part) for part in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        # 0 would switch the collector off: cyclic garbage would grow without bound.
        raise ImproperlyConfigured(
            f'GC_THRESHOLDS must be three positive integers such as "50000,20,10", or '
            f'"default"; got "{value}"'
        )
    return parts[0], parts[1], parts[2]


def collector_tune(thresholds: Sequence[int] | None, full_every: float) -> None:
    """Apply the settings' thresholds to this process and start its clock of full collections
    (``thresholds`` None: leave CPython's, no clock). Call it again in a forked child: a thread
    does not survive ``fork``."""
    global _clock_pid
    if thresholds is None:
        return
    gc.set_threshold(*thresholds)
    with _clock_lock:
        if _clock_pid == os.getpid():
            return
        _clock_pid = os.getpid()
    threading.Thread(
        target=_full_collections, args=(full_every,), name="gc-full-collections", daemon=True
    ).start()


_clock_lock = threading.Lock()
_clock_pid: int | None = None


def _full_collections(every: float) -> None:
    while True:
        time.sleep(every)
        gc.collect()
