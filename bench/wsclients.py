"""Ward dashboard clients for ``bin/bench fanout``: one asyncio process, no Django.

``python -m bench.wsclients SPEC.json RESULT.json``. Every client behaves like the dashboard
page (docs/dashboard-protocol.md): it connects to ``ws/wards/<code>/`` with its session cookie,
takes the snapshot, applies numbered events in order (tracking the last contiguous ``seq``) and
acknowledges them (``{"type": "ack", "seq": n}``) every ``ack_interval`` seconds. The run:

1. From ``connect_at`` the clients connect, at most ``in_flight`` handshakes (with their
   snapshot) at a time: as fast as the server takes them, never a pile-up of timeouts. When
   every client has had its turn the process writes ``ready_file``.
2. The harness, once every process is ready, writes ``control_file``: the measured window
   (``measure_from`` → ``measure_to``; receipts count until ``record_to`` so frames published
   at the end of the window still arrive), ``storms`` and ``end_at``. Every vitals frame
   received in the window is timestamped; its readings (bed, observed_at ms) are parsed once per
   process, not once per client.
3. At each time of ``storms`` (none, one or several): every client drops its connection at
   once (TCP abort, as on a network failure) and reconnects at a random moment of the next
   ``storm_window`` seconds with ``?last_seq=<last contiguous seq>``; what it gets back (replay
   or snapshot) is counted, every storm's in the one "storm" phase.
4. ``end_at``: every client closes normally (1000) and the process writes its result.

Every wait is bounded (``control_deadline``, the handshake timeout), every retry by ``ATTEMPTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ws import (
    ABNORMAL_CLOSURE,
    NORMAL_CLOSURE,
    OP_CLOSE,
    OP_TEXT,
    WS_ERRORS,
    HandshakeRefused,
    WebSocket,
)

# Ward events arrive as the publisher encoded them (monitoring.events: compact separators).
VITALS_PREFIX = b'{"type":"vitals"'
SEQ_KEY = b'"seq":'
ATTEMPTS = 3  # connects per phase before a client gives up (backoff 1 s, 2 s)
PROTOCOL = "2"  # portal.consumers.PROTOCOL (not imported: that loads Django)


@dataclass(frozen=True, slots=True)
class Spec:
    host: str
    port: int
    origin: str
    cookie_name: str
    clients: list[list[Any]]  # [client id, ward code, session key]
    connect_at: float
    in_flight: int
    handshake_timeout: float
    catch_up_timeout: float
    ready_file: str
    control_file: str
    connect_deadline: float  # the ramp's end: clients still connecting carry on, late
    control_deadline: float  # no control file by then: the harness is gone, give up
    storm_window: float
    ack_interval: float
    seed: int

    @classmethod
    def load(cls, path: Path) -> Spec:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class Window:
    """The schedule the harness decides once everyone is connected (``control_file``)."""

    measure_from: float = float("inf")
    measure_to: float = float("inf")
    record_to: float = float("inf")
    storms: list[float] = field(default_factory=list)
    end_at: float = float("inf")


def _phase_stats() -> dict[str, Any]:
    return {
        "attempts": 0,
        "connected": 0,
        "gave_up": 0,
        "failures": Counter(),
        "handshake_ms": [],
        "catch_up": Counter(),
        "catch_up_ms": [],
        "replay_events": [],
    }


@dataclass
class Client:
    index: int
    ward: str
    cookie: str
    ws: WebSocket | None = None
    applied: int = 0  # last contiguous seq applied
    pending: set[int] = field(default_factory=set)
    acked: int = 0
    dropping: bool = False  # the client itself is ending the connection
    reader: asyncio.Task[None] | None = None

    def apply(self, seq: int) -> None:
        if seq <= self.applied:
            return
        if seq == self.applied + 1:
            self.applied = seq
            while self.applied + 1 in self.pending:
                self.pending.discard(self.applied + 1)
                self.applied += 1
        else:
            self.pending.add(seq)

    def reset(self, seq: int) -> None:
        """A snapshot: everything up to ``seq`` is known."""
        self.applied = max(self.applied, seq)
        self.pending = {s for s in self.pending if s > self.applied}
        while self.applied + 1 in self.pending:
            self.pending.discard(self.applied + 1)
            self.applied += 1


class Dashboards:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.clients = [
            Client(i, ward, f"{spec.cookie_name}={session}")
            for i, (_, ward, session) in enumerate(spec.clients)
        ]
        self.phases = {"initial": _phase_stats(), "storm": _phase_stats()}
        # Server-initiated closes (code) and connections lost without one (1006), by phase.
        self.closes: dict[str, Counter[int]] = {"steady": Counter(), "storm": Counter()}
        self.final_close: Counter[str] = Counter()
        self.frames: dict[str, dict[str, Any]] = {}  # "ward|seq" → samples and receipt times
        self.messages = Counter()  # by type, over the whole run
        self.measured_frames = 0
        self.measured_bytes = 0
        self.acks_sent = 0
        self.window = Window()
        self.window_known = asyncio.Event()
        self.ramp_started = 0.0
        self.ramp_seconds = 0.0

    # --- receiving ------------------------------------------------------------------------

    def _frame_samples(self, ward: str, seq: int, payload: bytes) -> dict[str, Any]:
        key = f"{ward}|{seq}"
        entry = self.frames.get(key)
        if entry is None:
            event = json.loads(payload)
            samples = [
                [entry["bed"], value[1]]
                for entry in event.get("beds", [])
                for value in entry["vitals"].values()
            ]
            entry = self.frames[key] = {"samples": samples, "received": []}
        return entry

    def _on_text(
        self,
        client: Client,
        payload: bytes,
        received: float,
        caught_up: asyncio.Future[str] | None,
    ) -> None:
        window = self.window
        if payload.startswith(VITALS_PREFIX):
            # The hot path: no JSON parse per client. The publisher appends "seq" last.
            at = payload.rfind(SEQ_KEY)
            end = payload.find(b"}", at)
            seq = int(payload[at + len(SEQ_KEY) : end])
            self.messages["vitals"] += 1
            if window.measure_from <= received < window.measure_to:
                self.measured_frames += 1
                self.measured_bytes += len(payload)
            if window.measure_from <= received < window.record_to:
                entry = self._frame_samples(client.ward, seq, payload)
                entry["received"].append(round(received, 4))
            client.apply(seq)
            return
        message = json.loads(payload)
        kind = message.get("type", "?")
        self.messages[kind] += 1
        if window.measure_from <= received < window.measure_to:
            self.measured_frames += 1
            self.measured_bytes += len(payload)
        if kind == "snapshot":
            client.reset(int(message["seq"]))
        elif kind == "replay":
            for event in message.get("events", []):
                client.apply(int(event["seq"]))
            # The server counts the client as up to date with the replay's last event.
        elif "seq" in message:
            client.apply(int(message["seq"]))
        if kind in ("snapshot", "replay") and caught_up is not None and not caught_up.done():
            detail = f"replay:{len(message.get('events', []))}" if kind == "replay" else kind
            caught_up.set_result(detail)

    async def _reader(
        self, client: Client, ws: WebSocket, phase: str, caught_up: asyncio.Future[str]
    ) -> None:
        """Read one connection. ``caught_up`` is its own attempt's future, not whatever
        ``client.caught_up`` is by then: a client that reconnects at once after dropping its
        socket has a new attempt before this reader has seen its old connection end."""
        try:
            while True:
                message = await ws.recv()
                if message.opcode == OP_CLOSE:
                    if not client.dropping:  # the server closed on us
                        self.closes[phase][ws.close_code or ABNORMAL_CLOSURE] += 1
                    break
                if message.opcode == OP_TEXT:
                    self._on_text(client, message.payload, time.time(), caught_up)
        except WS_ERRORS:
            if not client.dropping:  # the connection died under us
                self.closes[phase][ABNORMAL_CLOSURE] += 1
        finally:
            if not caught_up.done():
                caught_up.set_result("closed")
            if client.ws is ws:
                client.ws = None

    # --- connecting -----------------------------------------------------------------------

    async def _connect(self, client: Client, phase: str, gate: asyncio.Semaphore | None) -> bool:
        """Connect (retrying twice, backing off) until the snapshot or replay arrived."""
        stats = self.phases[phase]
        path = f"/ws/wards/{client.ward}/?protocol={PROTOCOL}"  # as the page's URL says
        if phase == "storm" and client.applied:
            # A page that never got its snapshot has nothing to resume from: it reloads.
            path += f"&last_seq={client.applied}"
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(2 ** (attempt - 1))
            if time.time() > self._deadline():
                break
            # The gate bounds handshakes in progress; waiting for it is not handshake time.
            async with gate if gate is not None else contextlib.nullcontext():
                outcome = await self._attempt(client, path, phase, stats)
            if outcome:
                stats["connected"] += 1
                return True
        stats["gave_up"] += 1
        return False

    async def _attempt(self, client: Client, path: str, phase: str, stats: dict[str, Any]) -> bool:
        spec = self.spec
        stats["attempts"] += 1
        started = time.time()
        caught_up: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(spec.handshake_timeout):
                ws = await WebSocket.connect(
                    host=spec.host,
                    port=spec.port,
                    path=path,
                    origin=spec.origin,
                    cookie=client.cookie,
                )
        except TimeoutError:
            stats["failures"]["timeout"] += 1
            return False
        except HandshakeRefused as refused:
            stats["failures"][f"http_{refused.status}"] += 1
            return False
        except WS_ERRORS as error:
            stats["failures"][type(error).__name__] += 1
            return False
        stats["handshake_ms"].append(round(1000 * (time.time() - started), 2))
        client.ws = ws
        client.dropping = False
        reader_phase = "steady" if phase == "initial" else "storm"
        client.reader = asyncio.get_running_loop().create_task(
            self._reader(client, ws, reader_phase, caught_up)
        )
        try:
            async with asyncio.timeout(spec.catch_up_timeout):
                detail = await caught_up
        except TimeoutError:
            detail = "none"
        kind, _, count = detail.partition(":")
        stats["catch_up"][kind] += 1
        if kind in ("snapshot", "replay"):
            stats["catch_up_ms"].append(round(1000 * (time.time() - started), 2))
        if kind == "replay":
            stats["replay_events"].append(int(count))
        # "closed": refused after the handshake (4401, 4403, …), counted in closes; retry.
        return kind != "closed"

    async def _client(self, client: Client, gate: asyncio.Semaphore) -> None:
        await self._connect(client, "initial", gate)
        await self.window_known.wait()
        window = self.window
        for storm_at in window.storms:
            await asyncio.sleep(max(0.0, storm_at - time.time()))
            if client.ws is not None:
                client.dropping = True
                client.ws.abort()
            await asyncio.sleep(max(0.0, storm_at + self._storm_offset() - time.time()))
            await self._connect(client, "storm", None)
        await asyncio.sleep(max(0.0, window.end_at - time.time()))
        ws = client.ws
        if ws is None:
            self.final_close["not_connected"] += 1
            return
        client.dropping = True  # our own close: not an abnormal one
        try:
            await ws.close_start(NORMAL_CLOSURE)
            if client.reader is not None:
                async with asyncio.timeout(5.0):
                    await client.reader
        except (TimeoutError, *WS_ERRORS):
            pass
        ws.abort()
        code = ws.close_code
        self.final_close[str(code) if code is not None else "no_reply"] += 1

    async def _ramp(self, gate: asyncio.Semaphore) -> None:
        """Every client's first connect; then tell the harness this process is ready."""
        await asyncio.sleep(max(0.0, self.spec.connect_at - time.time()))
        self.ramp_started = time.time()
        tasks = [
            asyncio.get_running_loop().create_task(self._client(c, gate)) for c in self.clients
        ]
        while sum(s["connected"] + s["gave_up"] for s in [self.phases["initial"]]) < len(
            self.clients
        ):
            if time.time() > self.spec.control_deadline:
                break
            await asyncio.sleep(0.1)
        self.ramp_seconds = time.time() - self.ramp_started
        ready = Path(self.spec.ready_file)
        ready.with_suffix(".tmp").write_text(json.dumps({"ready_at": time.time()}))
        ready.with_suffix(".tmp").replace(ready)
        await self._read_window()
        await asyncio.gather(*tasks)

    async def _read_window(self) -> None:
        path = Path(self.spec.control_file)
        while not path.exists():  # noqa: ASYNC240 - a stat() every 0.1 s while waiting
            if time.time() > self.spec.control_deadline:
                self.window = Window(end_at=time.time())  # the harness is gone: end now
                self.window_known.set()
                return
            await asyncio.sleep(0.1)
        self.window = Window(**json.loads(path.read_text(encoding="utf-8")))  # noqa: ASYNC240
        self.window_known.set()

    def _storm_offset(self) -> float:
        return self.rng.uniform(0.0, self.spec.storm_window)

    def _deadline(self) -> float:
        """The end of the run: the window's once known, until then the harness's deadline."""
        return self.window.end_at if self.window_known.is_set() else self.spec.control_deadline

    async def _acks(self) -> None:
        spec = self.spec
        while True:
            if time.time() > self._deadline():
                return
            await asyncio.sleep(spec.ack_interval)
            for client in self.clients:
                ws = client.ws
                if ws is None or ws.closed or client.applied <= client.acked:
                    continue
                try:
                    # A socket the server stopped reading must not hold up everyone's acks.
                    async with asyncio.timeout(1.0):
                        await ws.send_text(f'{{"type": "ack", "seq": {client.applied}}}')
                except (TimeoutError, *WS_ERRORS):
                    continue
                client.acked = client.applied
                self.acks_sent += 1

    async def run(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.spec.in_flight)
        cpu_start = time.process_time()
        acks = asyncio.get_running_loop().create_task(self._acks())
        limit = self.spec.control_deadline - time.time() + 3600.0  # the window's own bound
        async with asyncio.timeout(limit):
            await self._ramp(gate)
        acks.cancel()
        phases = {
            name: {
                **stats,
                "failures": dict(stats["failures"]),
                "catch_up": dict(stats["catch_up"]),
            }
            for name, stats in self.phases.items()
        }
        return {
            "clients": len(self.clients),
            "ramp_seconds": self.ramp_seconds,
            "phases": phases,
            "closes": {
                phase: {str(k): v for k, v in c.items()} for phase, c in self.closes.items()
            },
            "final_close": dict(self.final_close),
            "messages": dict(self.messages),
            "measured_frames": self.measured_frames,
            "measured_bytes": self.measured_bytes,
            "acks_sent": self.acks_sent,
            "gaps_at_end": sum(1 for c in self.clients if c.pending),
            "frames": self.frames,
            "cpu_seconds": time.process_time() - cpu_start,
        }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.wsclients SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = Spec.load(Path(argv[0]))
    result = asyncio.run(Dashboards(spec).run())
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
