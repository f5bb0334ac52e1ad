"""Publishing to ward dashboards over the channel layer, and the live vitals push.

Every ward event is numbered (``monitoring.wardlog``) and sent to the ward's group as
``{"type": "ward.event", "group": <the group's name>, "seq": <its seq>, "text": <the client
message as JSON text>}`` (``group``: a process serving many dashboards routes by it); the
dashboard consumer forwards ``text`` as is (``ward_event_decode`` reads it back). The event is
encoded once here rather than once per dashboard: with a thousand dashboards, decoding and
re-encoding a ward's vitals frame (20 KB then) per socket was a quarter of daphne's CPU (bench
fanout). Delivery is best effort: MariaDB holds the truth, and a dashboard that missed an
event replays it or gets a snapshot.

Vitals are coalesced per ward on a short tick rather than sent per request: at 300 devices
posting every second, one ``group_send`` per message would be 300 sends/s per ward group,
while a 0.25 s tick sends at most four per ward with the newest value of each vital.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime as dt
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from monitoring.metrics import LIVE_PUSH_FAILURES
from monitoring.services import RecordedMessage
from monitoring.wardlog import async_ward_log

logger = logging.getLogger(__name__)
R = TypeVar("R")

# How long a send to a group (numbering included) may take before it is given up.
SEND_TIMEOUT_SECONDS = 2.0
# The loop of this process's ASGI server, when it has one: events produced on other threads
# of the same process (writer threads, in-process tasks of the embedded demo) are handed to
# it, because the in-memory channel layer is not thread-safe. With the process that set it
# (a forked child inherits the variable but not the thread running the loop).
_home_loop: asyncio.AbstractEventLoop | None = None
_home_pid = 0
# Processes without a server loop (Celery's) may get a loop of their own for their sends.
_sends_loop_enabled = False
_sends: tuple[int, threading.Thread, asyncio.AbstractEventLoop] | None = None
_sends_lock = threading.Lock()


# Set while a send runs on a loop ``_run_sync`` made for that one call: such a loop closes when
# the call returns, so it must not become the home loop. (It did: another thread's send, handed
# to it meanwhile, was cancelled when it closed, and the CancelledError escaped from an
# evaluation's on-commit callbacks; tests/alerts/test_evaluation_tasks.py caught it.)
_on_call_loop: contextvars.ContextVar[bool] = contextvars.ContextVar("on_call_loop", default=False)


def _home_set() -> None:
    global _home_loop, _home_pid
    if _on_call_loop.get():
        return
    _home_loop = asyncio.get_running_loop()
    _home_pid = os.getpid()


def sends_loop_enable() -> None:
    """Send this process's channel-layer messages from synchronous code (alert events, session
    endings) on one long-lived event loop, on a daemon thread started at the first send (in
    each process: a forked child starts its own).

    For processes without an ASGI server, i.e. Celery's. Without it every send ran on a new
    loop (asgiref's ``async_to_sync``): the channel layer and the ward log opened new Redis
    connections for each loop, and the ward log's client of each dead loop kept its socket,
    so a worker leaked a file descriptor per alert event until it could open no more. Not
    for server processes: their sends belong on the server's loop.
    """
    global _sends_loop_enabled
    _sends_loop_enabled = True


def _sends_loop() -> asyncio.AbstractEventLoop | None:
    global _sends
    if not _sends_loop_enabled:
        return None
    with _sends_lock:
        if _sends is None or _sends[0] != os.getpid() or not _sends[1].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="channel-sends", daemon=True)
            thread.start()
            _sends = (os.getpid(), thread, loop)
        return _sends[2]


def ward_group_name(ward_code: str) -> str:
    """The one name of a ward's channel-layer group (ward codes are slugs, valid here)."""
    return f"ward.{ward_code}"


def user_group_name(user_id: int) -> str:
    """The group of one user's open dashboards (session ended, access revoked)."""
    return f"user.{user_id}"


async def ward_event_send(ward_code: str, event: dict[str, Any]) -> int | None:
    """Number ``event`` and send it to the ward's dashboards; return its seq (None: failed)."""
    _home_set()
    try:
        # One budget for numbering and sending: a send given up on must not finish later,
        # after the next event of its ward (dashboards keep an alert's highest seq).
        async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
            seq = await async_ward_log.append(ward_code, event)
            text = json.dumps({**event, "seq": seq}, separators=(",", ":"))
            group = ward_group_name(ward_code)
            await get_channel_layer().group_send(
                group, {"type": "ward.event", "group": group, "seq": seq, "text": text}
            )
    except Exception:
        # Redis down or slow: the data is safe in MariaDB and dashboards resync on reconnect;
        # losing this push must not touch the path that produced it.
        LIVE_PUSH_FAILURES.inc()
        logger.warning("push to a ward group failed", exc_info=True)
        return None
    return seq


def ward_event_decode(message: dict[str, Any]) -> dict[str, Any]:
    """The client message inside a ``ward.event`` channel-layer message."""
    event: dict[str, Any] = json.loads(message["text"])
    return event


def _run_sync(make: Callable[[], Coroutine[Any, Any, R]]) -> R | None:
    """Run a coroutine from synchronous code, on this process's server loop when there is one
    (the in-memory channel layer is not thread-safe), else on the process's sends loop when
    enabled (``sends_loop_enable``), else on a loop of its own."""
    loop = _home_loop if _home_pid == os.getpid() else None
    if loop is None or not loop.is_running():
        # (A new sends loop may not be running yet: the coroutine waits in its queue.)
        loop = _sends_loop()
    if loop is not None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            future = asyncio.run_coroutine_threadsafe(make(), loop)
            try:
                return future.result(timeout=SEND_TIMEOUT_SECONDS * 2)
            except TimeoutError:
                # The coroutines give up after SEND_TIMEOUT_SECONDS and count that themselves;
                # this is a loop too busy (or gone) to run them at all. Only the timeout is
                # caught: Celery's soft time limit, raised here, must reach the task.
                future.cancel()
                LIVE_PUSH_FAILURES.inc()
                logger.warning("the channel layer's loop did not run a push in time")
                return None
            except concurrent.futures.CancelledError:
                # The loop was closing and dropped the send: make it on a loop of its own.
                logger.warning("the channel layer's loop dropped a push; sending it again")

    # No loop of ours. In a server's worker thread asgiref runs the call on the server's
    # loop. Anywhere else (a management command, a script) it makes a new loop per call, and
    # the ward log keeps each loop's Redis client open: a socket per call for the life of the
    # process, which is why long-lived processes without a server enable the sends loop.
    async def run() -> R:
        # Reset before returning: asgiref copies the call's context variables back into the
        # caller's, which may run a loop of its own later (a test, a server's thread).
        token = _on_call_loop.set(True)
        try:
            return await make()
        finally:
            _on_call_loop.reset(token)

    return async_to_sync(run)()


def ward_event_send_sync(ward_code: str, event: dict[str, Any]) -> int | None:
    """``ward_event_send`` for synchronous code (Celery tasks, on-commit callbacks)."""
    return _run_sync(lambda: ward_event_send(ward_code, event))


async def user_message_send(user_id: int, message: dict[str, Any]) -> bool:
    """Tell one user's open dashboards something (``message["type"]`` names the handler)."""
    _home_set()
    try:
        group = user_group_name(user_id)
        async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
            await get_channel_layer().group_send(group, {**message, "group": group})
    except Exception:
        LIVE_PUSH_FAILURES.inc()
        logger.warning("message to a user's dashboards failed", exc_info=True)
        return False
    return True


def user_message_send_sync(user_id: int, message: dict[str, Any]) -> bool | None:
    return _run_sync(lambda: user_message_send(user_id, message))


def epoch_ms(moment: dt.datetime) -> int:
    """An aware datetime as whole epoch milliseconds (exact, rounded down)."""
    return (moment - _EPOCH) // _MILLISECOND


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)


@dataclass(slots=True)
class _BedVitals:
    """The newest value of each code of one patient in one bed, waiting for the next tick."""

    # code → [value, observed_at in epoch ms], as it goes into the frame
    vitals: dict[str, list[float | int]] = field(default_factory=dict)
    artifact: set[str] = field(default_factory=set)

    def frame_entry(self, bed: str, patient: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"bed": bed, "patient": patient, "vitals": self.vitals}
        if self.artifact:
            entry["artifact"] = sorted(self.artifact)
        return entry


class WardVitalsCoalescer:
    """Keeps the newest value per (ward, bed, patient, code) and sends them on a tick.

    A frame groups its values by bed (docs/dashboard-protocol.md): the bed and patient ids are
    written once per bed rather than once per value, the unit not at all (every stored value is
    in its code's canonical unit, which the snapshot's catalogue gives) and the time as epoch
    milliseconds. A frame with six vitals of each of 36 beds is 10.5 KB instead of 44.4 KB (a
    quarter-second frame of 9 beds 2.7 KB instead of 11.1 KB), and every dashboard receives
    four a second (bench fanout).

    Each ward has its own phase within the interval: the wards this process has seen take
    the ``PHASES`` slots of the interval in the order 0, 4, 2, 6, 1, 5, 3, 7 (the i-th ward
    seen, bits reversed), so any number of wards spreads evenly. Every ward still gets at
    most one frame per interval and a reading still waits at most one interval, but the
    dashboards' daphne gets one slot's frames at a time instead of every ward's at once: with
    nine wards and 1,000 dashboards, ~110 frames a slot (~220 in the slot two wards share)
    rather than ~1,000 at once, where the last frame of the burst had waited for all before
    it (docs/scaling.md). ``add`` runs on the event loop of the server that ingests."""

    PHASE_BITS = 3
    PHASES = 1 << PHASE_BITS

    def __init__(self, *, interval: float | None = None) -> None:
        self._interval = interval
        self._pending: dict[str, dict[tuple[str, str], _BedVitals]] = {}
        self._due: dict[str, float] = {}  # ward → the loop time of its next frame
        self._sent: dict[str, float] = {}  # ward → the slot its last frame left in
        self._phase: dict[str, int] = {}  # ward → its slot of the interval, for good
        self._task: asyncio.Task[None] | None = None
        # While the tick sleeps: what wakes it, and the slot it sleeps until.
        self._wake: asyncio.Future[None] | None = None
        self._target = math.inf

    def add(self, recorded: RecordedMessage) -> None:
        """Queue a committed message's newest readings; never blocks, never raises."""
        if recorded.ward_code is None or recorded.bed_public_id is None:
            return
        ward = self._pending.setdefault(recorded.ward_code, {})
        for patient, readings in recorded.latest.items():
            if patient is None:
                continue  # a bed without an admitted patient shows no vitals
            pending = ward.get((recorded.bed_public_id, patient))
            if pending is None:
                pending = ward[(recorded.bed_public_id, patient)] = _BedVitals()
            for reading in readings.values():
                observed_ms = epoch_ms(reading.observed_at)
                current = pending.vitals.get(reading.code)
                if current is not None and current[1] > observed_ms:
                    continue
                pending.vitals[reading.code] = [reading.value, observed_ms]
                if reading.artifact:
                    pending.artifact.add(reading.code)
                else:
                    pending.artifact.discard(reading.code)
        if not ward:
            del self._pending[recorded.ward_code]
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # (A task on another loop: a closed one, in tests; its wake-up went with it.)
            self._task, self._wake, self._target = loop.create_task(self._tick()), None, math.inf
        if recorded.ward_code not in self._due:
            due = self._due[recorded.ward_code] = self._next_slot(recorded.ward_code, loop.time())
            if due < self._target and self._wake is not None and not self._wake.done():
                self._wake.set_result(None)  # the tick sleeps until a later slot

    @property
    def interval(self) -> float:
        # A reading waits up to VITALS_PUSH_INTERVAL_SECONDS (default 0.25) for its ward's next
        # vitals frame: the largest part of the "ingested → on a screen" latency (target p99
        # < 0.5 s). Each open dashboard receives one frame per interval: halving it doubles
        # daphne's fan-out work (bench fanout), so it is a setting.
        if self._interval is not None:
            return self._interval
        return float(getattr(settings, "VITALS_PUSH_INTERVAL_SECONDS", 0.25))

    def _next_slot(self, ward_code: str, now: float) -> float:
        """The ward's next slot: the first at or after ``now`` on its grid, and after the slot
        its last frame left in (a late tick must not squeeze two frames into one interval)."""
        phase = self._phase.get(ward_code)
        if phase is None:
            seen = len(self._phase) % self.PHASES
            phase = self._phase[ward_code] = int(f"{seen:0{self.PHASE_BITS}b}"[::-1], 2)
        interval = self.interval
        offset = phase * interval / self.PHASES
        after = max(now, self._sent.get(ward_code, -math.inf) + interval / 2)
        return offset + math.ceil((after - offset) / interval - _SLOT_ROUNDING) * interval

    async def _tick(self) -> None:
        # On the grid of the slots: a ward's frame leaves at its slot, or as soon after it as
        # the loop gets to it; a ward whose slot comes before the one slept for wakes it.
        loop = asyncio.get_running_loop()
        while self._due:
            target = min(self._due.values())
            if target > loop.time():
                self._wake, self._target = loop.create_future(), target
                timer = loop.call_at(target, _wake_up, self._wake)
                try:
                    await self._wake
                finally:
                    timer.cancel()
                    self._wake, self._target = None, math.inf
                if min(self._due.values(), default=target) < target:
                    continue  # woken for an earlier slot
            # The slot slept for counts as reached even if the loop's clock (uvloop's counts
            # whole milliseconds) reads a little before it.
            reached = max(loop.time(), target) + _SLOT_ROUNDING * self.interval
            await self._send([ward for ward, at in self._due.items() if at <= reached])

    async def flush(self) -> int:
        """Send everything pending now, every ward at once; return the ward events sent.
        For tests and a server's shutdown, not beside a running tick."""
        return await self._send(list(self._pending))

    async def _send(self, wards: list[str]) -> int:
        events = []
        now = asyncio.get_running_loop().time()
        for ward in wards:
            slot = self._due.pop(ward, None)
            if slot is not None:
                self._sent[ward] = min(slot, now)  # (flush sends before the slot)
            beds = self._pending.pop(ward, None)
            if beds:
                entries = [entry.frame_entry(*key) for key, entry in beds.items()]
                events.append((ward, {"type": "vitals", "ward": ward, "beds": entries}))
        sent = await asyncio.gather(*(ward_event_send(w, e) for w, e in events))
        return sum(1 for seq in sent if seq is not None)


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# A slot this close (as a share of the interval) counts as now: the float grid's rounding.
_SLOT_ROUNDING = 1e-6


ward_vitals = WardVitalsCoalescer()
