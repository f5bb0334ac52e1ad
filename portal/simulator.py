"""The device simulator behind ``manage.py simulate_devices``. DEMO ONLY, free of Django.

The simulated patients and monitors live in ``portal.physiology``; here are the plans (which
scenario runs on which device, from when) and the driving loop: one shared async HTTP client,
one task per device ticking on its interval, a bounded queue per device, and retries that
resend the *same* message (same id, same bytes) so the ingestion endpoint's idempotency makes
a retry harmless.

Every code, unit, precision and plausibility band comes from ``monitoring.vitals``; the numbers
here are simulation parameters (what a plausible adult on a ward looks like), not clinical rules.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from portal.physiology import (
    SCENARIOS,
    DeviceSpec,
    OutgoingMessage,
    PatientPhysiology,
    ScheduledScenario,
    SimulatedDevice,
    baseline_draw,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

INGEST_PATH = "/api/v1/ingest/"

# --- Plans: which scenario runs on which device, from when --------------------------------

# The default demo plan (serials of fixtures/demo_hospital.json): a few beds deteriorate at
# staggered times so someone watching the Acute Medical Unit sees alerts within minutes, while
# most beds stay stable. Entries for devices not being simulated are skipped.
DEMO_PLAN: tuple[tuple[str, str, float], ...] = (
    ("DEMO-AMU-09", "artifact", 0),
    ("DEMO-AMU-06", "sepsis", 30),
    ("DEMO-AMU-04", "desaturation", 60),
    ("DEMO-AMU-02", "tachycardia", 120),
    ("DEMO-SURG-08", "fever", 90),
    ("DEMO-SURG-05", "hypotension", 150),
    ("DEMO-RESP-08", "disconnect", 180),
    ("DEMO-RESP-03", "desaturation", 240),
)


class PlanInvalid(ValueError):
    """A --scenario argument names no known scenario or no simulated device."""


def _target_key(text: str) -> str:
    return "".join(text.split()).lower()


def scenario_argument_parse(text: str) -> tuple[str, ScheduledScenario]:
    """Parse ``BED_OR_SERIAL=NAME[@SECONDS]`` into the target and the scheduled scenario."""
    target, equals, rest = text.rpartition("=")
    name, at, start = rest.partition("@")
    if not equals or not target.strip():
        raise PlanInvalid(f"{text!r}: expected BED_OR_SERIAL=NAME[@SECONDS]")
    if name not in SCENARIOS:
        raise PlanInvalid(f"{text!r}: no scenario {name!r}; one of {', '.join(SCENARIOS)}")
    try:
        start_after = float(start) if at else 0.0
    except ValueError:
        start_after = -1.0
    if not (math.isfinite(start_after) and start_after >= 0):
        raise PlanInvalid(f"{text!r}: the start after @ is a number of seconds ≥ 0")
    return target, ScheduledScenario(SCENARIOS[name], start_after)


def scenario_plan_build(
    *, specs: Sequence[DeviceSpec], requested: Sequence[str], demo_plan: bool
) -> dict[str, ScheduledScenario]:
    """Serial → scheduled scenario: the demo plan (if on), overridden by explicit requests.

    A request targets a serial or a bed written ``ward/label`` (case and spaces ignored, so
    ``amu/bed03`` is ``amu/Bed 03``).
    """
    by_key: dict[str, str] = {}
    for spec in specs:
        by_key[_target_key(spec.serial)] = spec.serial
        if spec.bed:
            by_key[_target_key(spec.bed)] = spec.serial
    plan: dict[str, ScheduledScenario] = {}
    if demo_plan:
        simulated = {spec.serial for spec in specs}
        for serial, name, start_after in DEMO_PLAN:
            if serial in simulated:
                plan[serial] = ScheduledScenario(SCENARIOS[name], start_after)
    for text in requested:
        target, scheduled = scenario_argument_parse(text)
        found = by_key.get(_target_key(target))
        if found is None:
            raise PlanInvalid(f"{text!r}: {target!r} is no simulated device serial or bed")
        plan[found] = scheduled
    return plan


def simulated_devices_build(
    *,
    specs: Sequence[DeviceSpec],
    plan: Mapping[str, ScheduledScenario],
    seed: int,
    boot_id: str,
) -> list[SimulatedDevice]:
    """One simulated device per spec; each bed's patient is seeded from ``seed`` and its serial."""
    devices = []
    for spec in specs:
        # Seeded streams for a deterministic demo, not for anything secret.
        rng = random.Random(f"{seed}/{spec.serial}")  # noqa: S311
        physiology = PatientPhysiology(
            baseline=baseline_draw(rng), rng=rng, scheduled=plan.get(spec.serial)
        )
        devices.append(SimulatedDevice(spec=spec, physiology=physiology, rng=rng, boot_id=boot_id))
    return devices


# --- The driving loop ---------------------------------------------------------------------


@dataclass(slots=True)
class SimulationStats:
    sent: int = 0  # messages the portal took (2xx)
    accepted: int = 0  # observations it accepted in them
    retried: int = 0  # re-sends of a message after a network error, 5xx or 429
    rejected: int = 0  # messages answered with another 4xx, not retried
    dropped: int = 0  # messages lost: queue overflow or retries exhausted

    def line(self, *, queued: int) -> str:
        return (
            f"sent {self.sent}, accepted {self.accepted} observations, "
            f"retried {self.retried}, rejected {self.rejected}, dropped {self.dropped}, "
            f"queued {queued}"
        )


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_attempts: int = 10
    backoff_first: float = 0.5  # seconds; doubles per attempt
    backoff_max: float = 30.0
    retry_after_max: float = 300.0  # a Retry-After is honoured up to this
    queue_limit: int = 300  # waiting messages per device: 5 min at one a second
    request_timeout: float = 10.0


def retry_after_seconds(value: str | None, *, now: dt.datetime) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DeviceRunner:
    """Ticks one device on its interval and delivers its messages in order.

    Logs name the device serial and message id only, never values or patients.
    """

    def __init__(
        self,
        *,
        device: SimulatedDevice,
        client: httpx.AsyncClient,
        stats: SimulationStats,
        policy: DeliveryPolicy,
        rng: random.Random,
        wall_clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.device = device
        self._client = client
        self._stats = stats
        self._policy = policy
        self._rng = rng
        self._wall_clock = wall_clock
        self._waiting: deque[OutgoingMessage] = deque()
        self._in_flight: OutgoingMessage | None = None
        self._wakeup = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._waiting) + (self._in_flight is not None)

    def enqueue(self, message: OutgoingMessage) -> None:
        if len(self._waiting) >= self._policy.queue_limit:
            lost = self._waiting.popleft()
            self._stats.dropped += 1
            logger.error(
                "%s: queue full (%d waiting): DROPPED the oldest message %s (%d dropped so far)",
                self.device.spec.serial,
                len(self._waiting) + 1,
                lost.message_id,
                self._stats.dropped,
            )
        self._waiting.append(message)
        self._wakeup.set()

    async def run(self, *, interval: float, start_delay: float) -> None:
        # TaskGroup: if either loop fails, the other stops and the error surfaces.
        async with asyncio.TaskGroup() as group:
            group.create_task(self._tick_loop(interval=interval, start_delay=start_delay))
            group.create_task(self._send_loop())

    async def _tick_loop(self, *, interval: float, start_delay: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(start_delay)
        previous = loop.time() - interval
        next_tick = loop.time()
        while True:
            now = loop.time()
            # The patient ages by the time that really passed, so scenario timings follow the
            # wall clock even when the loop was held up.
            message = self.device.tick(seconds=now - previous, now=self._wall_clock())
            previous = now
            if message is not None:
                self.enqueue(message)
            next_tick += interval
            if next_tick < loop.time():
                # Fell behind (a suspended laptop): resume the rhythm rather than burst.
                next_tick = loop.time() + interval
            await asyncio.sleep(next_tick - loop.time())

    async def _send_loop(self) -> None:
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._in_flight = self._waiting.popleft()
            try:
                await self.deliver(self._in_flight)
            finally:
                self._in_flight = None

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._policy.backoff_max, self._policy.backoff_first * 2 ** (attempt - 1))
        # Half fixed, half jitter: devices that failed together do not retry together.
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    async def deliver(self, message: OutgoingMessage) -> None:
        """Post one message until it is taken or refused, or the attempts run out."""
        serial = self.device.spec.serial
        headers = {
            "Authorization": f"Device {self.device.spec.token}",
            "Content-Type": "application/json",
        }
        reason = ""
        for attempt in range(1, self._policy.max_attempts + 1):
            try:
                response = await self._client.post(
                    INGEST_PATH, content=message.body, headers=headers
                )
            except httpx.TransportError as error:
                reason, wait = type(error).__name__, self._backoff(attempt)
            else:
                status = response.status_code
                if response.is_success:
                    self._stats.sent += 1
                    self._stats.accepted += _json_field(response, "accepted", default=0)
                    return
                if status == 429:
                    retry_after = retry_after_seconds(
                        response.headers.get("Retry-After"), now=self._wall_clock()
                    )
                    reason = "HTTP 429"
                    wait = (
                        self._backoff(attempt)
                        if retry_after is None
                        else min(retry_after, self._policy.retry_after_max)
                    )
                elif status >= 500:
                    reason, wait = f"HTTP {status}", self._backoff(attempt)
                else:
                    self._stats.rejected += 1
                    logger.warning(
                        "%s: message %s rejected: HTTP %d %s: %s%s",
                        serial,
                        message.message_id,
                        status,
                        _json_field(response, "code", default="-"),
                        _json_field(response, "detail", default="-"),
                        " (is the demo hospital loaded? manage.py load_demo)"
                        if status == 401
                        else "",
                    )
                    return
            if attempt == self._policy.max_attempts:
                break
            self._stats.retried += 1
            logger.info(
                "%s: message %s: %s; retry %d in %.1f s",
                serial,
                message.message_id,
                reason,
                attempt,
                wait,
            )
            await asyncio.sleep(wait)
        self._stats.dropped += 1
        logger.error(
            "%s: message %s DROPPED after %d attempts (last: %s)",
            serial,
            message.message_id,
            self._policy.max_attempts,
            reason,
        )


def _json_field(response: httpx.Response, name: str, *, default: _T) -> _T:
    try:
        value = response.json().get(name, default)
    except (ValueError, AttributeError):
        return default
    return value if isinstance(value, type(default)) else default


@dataclass(slots=True)
class Simulation:
    """The devices to drive and where; ``run`` drives them until ``duration`` (None: forever)."""

    devices: Sequence[SimulatedDevice]
    url: str
    interval: float = 1.0
    duration: float | None = None
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    stats: SimulationStats = field(default_factory=SimulationStats)
    rng: random.Random = field(default_factory=random.Random)
    report: Callable[[str], None] = print
    summary_every: float = 10.0
    wall_clock: Callable[[], dt.datetime] = utc_now
    transport: httpx.AsyncBaseTransport | None = None  # tests hand in an httpx.MockTransport

    async def run(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.url, timeout=self.policy.request_timeout, transport=self.transport
        ) as client:
            runners = [
                DeviceRunner(
                    device=device,
                    client=client,
                    stats=self.stats,
                    policy=self.policy,
                    rng=self.rng,
                    wall_clock=self.wall_clock,
                )
                for device in self.devices
            ]
            tasks = [
                asyncio.create_task(
                    # Jittered starts: the devices do not all post on the same millisecond.
                    runner.run(
                        interval=self.interval, start_delay=self.rng.uniform(0, self.interval)
                    ),
                    name=f"simulate {runner.device.spec.serial}",
                )
                for runner in runners
            ]
            tasks.append(asyncio.create_task(self._summaries(runners), name="summaries"))
            try:
                done, _ = await asyncio.wait(
                    tasks, timeout=self.duration, return_when=asyncio.FIRST_EXCEPTION
                )
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._summarise(runners)

    def _summarise(self, runners: Sequence[DeviceRunner]) -> None:
        queued = sum(runner.queued for runner in runners)
        self.report(f"[{self.wall_clock():%H:%M:%S}] {self.stats.line(queued=queued)}")

    async def _summaries(self, runners: Sequence[DeviceRunner]) -> None:
        while True:
            await asyncio.sleep(self.summary_every)
            self._summarise(runners)
