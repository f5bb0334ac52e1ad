"""The ingestion load generator: one asyncio process, no Django, driven by a JSON spec.

``python -m bench.loadgen SPEC.json RESULT.json``; bench.ingest writes the spec, starts one or
more of these processes, and reads their results. Two patterns:

* ``paced``: each device has its own keep-alive connection and its own schedule (a start offset
  within the first period, then one message per period). A send is due at its *intended* time;
  when the previous response came back late the next send goes at once, but its latency is still
  measured from the intended time as well as from the actual send, so a slow server cannot hide
  its queueing delay by slowing the generator down (coordinated omission). Sends that could not
  start before ``duration + grace`` are counted as unsent, never silently dropped.
* ``batched``: closed loop, each connection sends its next message as soon as the previous one
  is answered, rotating over its own devices; every message carries ``batch_size`` readings.

Paced specs may also carry ``overrides`` (a device sends a fixed value for one vital during a
window of the schedule: how ``bench.alerts`` makes a cohort desaturate at a known time) and
``trace_devices`` (for those devices the result keeps every message's ``observed_at`` and the
wall-clock time its response arrived, so a benchmark can match a reading seen downstream, in an
alert or on a dashboard, with the moment its ingestion was acknowledged).

Every message has a unique ``message_id`` (``<run>-d<device>-<n>`` or ``<run>-c<conn>-<n>``).
Per response the result holds the intended, sent and done times (seconds after the common
start), the status (an int, or ``timeout`` / ``connection``) and the accepted count; the 201s
also go into ``acked`` (message_id → accepted) for the database check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.http11 import (
    EXCHANGE_ERRORS,
    Connection,
    head_with_length,
    request_head_prefix,
)

MAX_REQUESTS_PER_CONNECTION = 10_000_000  # a count bound on the closed loop, besides its time bound
CONNECT_CONCURRENCY = 50  # below daphne's listen backlog, so a thousand connects do not stall
PAUSE_AFTER_CONNECTION_ERROR = 0.05  # a refused connect must not turn into a hot loop


@dataclass(frozen=True, slots=True)
class VitalSpec:
    code: str
    unit: str
    low: float
    high: float
    decimals: int


@dataclass(frozen=True, slots=True)
class Spec:
    mode: str  # "paced" | "batched"
    run_id: str
    host: str
    port: int
    path: str
    tokens_file: str
    devices: list[int]  # indices into the tokens file handled by this process
    total_devices: int  # across all load generator processes (spreads paced start offsets)
    start_at: float  # time.time() of the common start
    duration: float  # warm-up included
    measure_from: float  # seconds after the start: the warm-up ends, CPU accounting begins
    grace: float  # paced: how late a send may still start after duration
    request_timeout: float
    rate: float  # paced: messages per second per device
    batch_size: int  # readings per message
    # batched: [connection index, [device indices it rotates over]] handled by this process
    connections: list[tuple[int, list[int]]]
    seed: int
    vitals: list[VitalSpec]
    # paced: [{"device": d, "code": c, "value": v, "from": s, "to": s}], seconds after the
    # start; a send intended in [from, to) carries ``value`` for ``code``.
    overrides: list[dict[str, Any]] = field(default_factory=list)
    # paced: devices whose messages are traced (see the module docstring).
    trace_devices: list[int] = field(default_factory=list)
    # paced: once this file exists the devices stop (a harness whose schedule is decided as
    # it goes sets a generous duration and ends the load here); their remaining sends are
    # counted as ``stopped``, not ``unsent``.
    stop_file: str = ""

    @classmethod
    def load(cls, path: Path) -> Spec:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["vitals"] = [VitalSpec(**vital) for vital in raw["vitals"]]
        return cls(**raw)


@dataclass
class Recorder:
    t0: float
    intended: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    status: list[int | str] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    duplicate_acks: int = 0
    unsent: int = 0
    stopped: int = 0

    def add(
        self,
        *,
        intended: float,
        sent: float,
        done: float,
        status: int | str,
        accepted: int,
        message_id: str,
    ) -> None:
        self.intended.append(round(intended - self.t0, 6))
        self.sent.append(round(sent - self.t0, 6))
        self.done.append(round(done - self.t0, 6))
        self.status.append(status)
        self.accepted.append(accepted)
        if status == 201:
            if message_id in self.acked:
                self.duplicate_acks += 1
            self.acked[message_id] = accepted


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reading_json(vital: VitalSpec, value: float, observed_at: str) -> str:
    return (
        f'{{"code":{json.dumps(vital.code)},"value":{value},'
        f'"unit":{json.dumps(vital.unit)},"observed_at":"{observed_at}"}}'
    )


def _value(vital: VitalSpec, rng: random.Random) -> float:
    return round(rng.uniform(vital.low, vital.high), vital.decimals)


def _body(message_id: str, observations: str) -> bytes:
    return f'{{"message_id":"{message_id}","observations":{observations}}}'.encode()


class BatchBodies:
    """The observations array for a batch size, rebuilt once a second (observed_at moves on).

    Building a thousand readings per request would make the generator the bottleneck; only the
    message_id must differ between messages, and it does.
    """

    def __init__(self, vitals: list[VitalSpec], rng: random.Random) -> None:
        self.vitals = vitals
        self.rng = rng
        self._cache: dict[int, tuple[int, str]] = {}

    def observations(self, size: int) -> str:
        second = int(time.time())
        cached = self._cache.get(size)
        if cached is not None and cached[0] == second:
            return cached[1]
        observed_at = _iso_now()
        readings = []
        for i in range(size):
            vital = self.vitals[i % len(self.vitals)]
            readings.append(_reading_json(vital, _value(vital, self.rng), observed_at))
        text = "[" + ",".join(readings) + "]"
        self._cache[size] = (second, text)
        return text


class LoadGenerator:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        tokens: list[str] = json.loads(Path(spec.tokens_file).read_text(encoding="utf-8"))
        self.prefixes = [
            request_head_prefix(
                method="POST",
                host=spec.host,
                port=spec.port,
                path=spec.path,
                headers={
                    "Authorization": f"Device {token}",
                    "Content-Type": "application/json",
                },
            )
            for token in tokens
        ]
        self.rng = random.Random(spec.seed)
        self.connect_errors = 0
        self.overrides: dict[int, list[tuple[float, float, str, float]]] = {}
        for override in spec.overrides:
            self.overrides.setdefault(override["device"], []).append(
                (override["from"], override["to"], override["code"], override["value"])
            )
        # device → [[n, observed_at, response time (time.time()), status], ...]
        self.trace: dict[int, list[list[Any]]] = {d: [] for d in spec.trace_devices}
        self.stopping = False

    async def _watch_stop_file(self) -> None:
        path = Path(self.spec.stop_file)
        while not self.stopping:
            await asyncio.sleep(0.2)
            self.stopping = path.exists()  # noqa: ASYNC240 - one stat() every 0.2 s

    async def _exchange(
        self,
        connection: Connection,
        *,
        prefix: bytes,
        body: bytes,
        message_id: str,
        intended: float,
        recorder: Recorder,
    ) -> bool:
        """Send one message; record the outcome; False when the connection failed."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        status: int | str
        accepted = 0
        ok = True
        try:
            async with asyncio.timeout(self.spec.request_timeout):
                response = await connection.request(head_with_length(prefix, body), body)
        except TimeoutError:
            connection.close()
            status, ok = "timeout", False
        except EXCHANGE_ERRORS:
            connection.close()
            status, ok = "connection", False
        else:
            status = response.status
            if status == 201:
                try:
                    accepted = int(json.loads(response.body)["accepted"])
                except (ValueError, KeyError, TypeError):
                    status = "bad_201_body"
        recorder.add(
            intended=intended,
            sent=sent,
            done=loop.time(),
            status=status,
            accepted=accepted,
            message_id=message_id,
        )
        return ok

    async def _connect_all(self, connections: list[Connection]) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(connection: Connection) -> None:
            async with gate:
                try:
                    async with asyncio.timeout(self.spec.request_timeout):
                        await connection.open()
                except (TimeoutError, *EXCHANGE_ERRORS):
                    # Left closed: the first request reconnects and records any failure.
                    self.connect_errors += 1

        await asyncio.gather(*(connect(c) for c in connections))

    async def _paced_device(
        self, device: int, connection: Connection, offset: float, t0: float, recorder: Recorder
    ) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        period = 1.0 / spec.rate
        count = max(1, round(spec.duration * spec.rate))
        last_start = t0 + spec.duration + spec.grace
        rng = random.Random(spec.seed * 100_003 + device)
        overrides = self.overrides.get(device, [])
        trace = self.trace.get(device)
        for k in range(count):
            intended = t0 + offset + k * period
            delay = intended - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif loop.time() > last_start:
                recorder.unsent += count - k
                return
            if self.stopping:
                recorder.stopped += count - k
                return
            message_id = f"{spec.run_id}-d{device}-{k}"
            observed_at = _iso_now()
            forced = {
                code: value for start, end, code, value in overrides if start <= intended - t0 < end
            }
            observations = ",".join(
                _reading_json(vital, forced.get(vital.code, _value(vital, rng)), observed_at)
                for vital in spec.vitals
            )
            await self._exchange(
                connection,
                prefix=self.prefixes[device],
                body=_body(message_id, f"[{observations}]"),
                message_id=message_id,
                intended=intended,
                recorder=recorder,
            )
            if trace is not None:
                # No await since the exchange recorded its outcome: this is its response time.
                trace.append([k, observed_at, time.time(), recorder.status[-1]])

    async def _batched_connection(
        self,
        index: int,
        devices: list[int],
        connection: Connection,
        bodies: BatchBodies,
        t0: float,
        recorder: Recorder,
    ) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        end = t0 + spec.duration
        for sequence in range(MAX_REQUESTS_PER_CONNECTION):
            now = loop.time()
            if now >= end:
                return
            device = devices[sequence % len(devices)]
            message_id = f"{spec.run_id}-c{index}-{sequence}"
            ok = await self._exchange(
                connection,
                prefix=self.prefixes[device],
                body=_body(message_id, bodies.observations(spec.batch_size)),
                message_id=message_id,
                intended=now,
                recorder=recorder,
            )
            if not ok:
                await asyncio.sleep(PAUSE_AFTER_CONNECTION_ERROR)

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        loop = asyncio.get_running_loop()
        t0 = loop.time() + (spec.start_at - time.time())
        recorder = Recorder(t0=t0)
        if spec.mode == "paced":
            connections = [Connection(spec.host, spec.port) for _ in spec.devices]
        else:
            connections = [Connection(spec.host, spec.port) for _ in spec.connections]
        await self._connect_all(connections)
        late_by = loop.time() - t0
        if late_by < 0:
            await asyncio.sleep(-late_by)
        marks: dict[str, float] = {}

        def mark_measured_window() -> None:
            marks.update(cpu=time.process_time(), wall=loop.time())

        loop.call_at(t0 + spec.measure_from, mark_measured_window)
        if spec.mode == "paced":
            # Each device's first send falls at a random point of the first period (seeded,
            # so repeated runs offer the same schedule).
            offsets = random.Random(spec.seed)
            offset_by_device = {
                d: offsets.uniform(0, 1.0 / spec.rate) for d in range(spec.total_devices)
            }
            tasks = [
                self._paced_device(device, connection, offset_by_device[device], t0, recorder)
                for device, connection in zip(spec.devices, connections, strict=True)
            ]
        else:
            bodies = BatchBodies(spec.vitals, self.rng)
            tasks = [
                self._batched_connection(index, devices, connection, bodies, t0, recorder)
                for (index, devices), connection in zip(spec.connections, connections, strict=True)
            ]
        watcher = (
            asyncio.get_running_loop().create_task(self._watch_stop_file())
            if spec.stop_file
            else None
        )
        await asyncio.gather(*tasks)
        if watcher is not None:
            watcher.cancel()
        if not marks:  # every task ended within the warm-up
            mark_measured_window()
        wall = loop.time() - marks["wall"]
        cpu = time.process_time() - marks["cpu"]
        for connection in connections:
            connection.close()
        return {
            "mode": spec.mode,
            "late_start_seconds": round(max(0.0, late_by), 3),
            "connect_errors": self.connect_errors,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
            "unsent": recorder.unsent,
            "stopped": recorder.stopped,
            "duplicate_acks": recorder.duplicate_acks,
            "records": {
                "intended": recorder.intended,
                "sent": recorder.sent,
                "done": recorder.done,
                "status": recorder.status,
                "accepted": recorder.accepted,
            },
            "acked": recorder.acked,
            "trace": {str(device): entries for device, entries in self.trace.items()},
        }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.loadgen SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = Spec.load(Path(argv[0]))
    result = asyncio.run(LoadGenerator(spec).run())
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
