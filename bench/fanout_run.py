"""One step of ``bin/bench fanout``: N dashboards on a fresh daphne under the 300-device load.

Timeline of a step (absolute times shared with the client processes, bench.wsclients):

    load starts ─ warm-up ─ pre-connect ─ connect ramp (N / rate) ─ 2 s ─ measured window ─
    storm (all drop, reconnect within the window) ─ settle ─ clients close ─ load ends

What is measured where:

* latency of a reading: from the 201 of the message that carried it (the load generator traces
  every device: (bed, observed_at) → response time) to each client's receipt of the vitals frame
  holding it; a few readings are drawn at random from each frame a client received (the frame's
  readings are parsed once per client process, so the clients stay cheap);
* the same split at the channel layer: a listener in this process (bench.listener) timestamps
  every ward event when it is published, so latency = commit → published (the 0.25 s coalescing
  tick, the sequence number in Redis) + published → received (daphne's fan-out);
* daphne's RSS before the ramp and once everyone is connected (growth per connection), its
  open-files limit and descriptors, CPU of every process over the measured window.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import PYTHON, write_json
from bench.harness import (
    Harness,
    celery_wait_drained,
    ingestion_line,
    latency,
    paced_load_finish,
    paced_load_measure,
    paced_load_start,
    paced_load_stop,
    paced_load_summary,
    traced_responses,
)
from bench.ingest_run import CELERY_DRAIN_SECONDS, INGEST_PATH
from bench.listener import GroupListener
from bench.processes import (
    CpuMeter,
    Service,
    daphne_start,
    free_port,
    listening_process,
    machine_busy_seconds,
    spawn,
)
from bench.profiling import Profiler

PRE_CONNECT_SECONDS = 3.0  # of load before the first dashboard: its snapshot has data
SETTLE_BEFORE_WINDOW = 2.0
# After the window, before the storm: frames published at its end still reach every client.
RECORD_TAIL = 3.0
CLIENTS_PER_PROCESS = 1000
MAX_CLIENT_PROCESSES = 4


@dataclass
class Setup:
    """What every step reuses: the devices and their tokens, sessions, wards, the worker."""

    devices: list[Any]
    tokens_file: Path
    bed_device: dict[str, int]  # bed public id → device index
    sessions: list[str]
    wards: list[str]
    cookie_name: str
    celery: Service


@dataclass
class Schedule:
    """Absolute times (time.time()). The window is decided once everyone is connected."""

    load_start: float
    connect_at: float
    connect_deadline: float  # the ramp's bound: the window starts then whatever happened
    load_duration: float  # the load's upper bound; it is stopped at end_at (stop file)
    measure_from: float = 0.0
    measure_to: float = 0.0
    record_to: float = 0.0
    storms: list[float] = field(default_factory=list)
    end_at: float = 0.0

    def window_decide(self, args: argparse.Namespace) -> None:
        self.measure_from = time.time() + SETTLE_BEFORE_WINDOW
        self.measure_to = self.measure_from + args.measure
        self.record_to = self.measure_to + RECORD_TAIL
        period = args.storm_window + args.settle
        count = args.storms if args.storm_window > 0 else 0
        self.storms = [self.record_to + i * period for i in range(count)]
        self.end_at = self.record_to + (period * count if count else 1)

    def window(self) -> dict[str, float | list[float]]:
        return {
            "measure_from": self.measure_from,
            "measure_to": self.measure_to,
            "record_to": self.record_to,
            "storms": self.storms,
            "end_at": self.end_at,
        }


def schedule_for(args: argparse.Namespace, clients: int, lead: float) -> Schedule:
    load_start = time.time() + lead
    connect_at = load_start + args.warmup + PRE_CONNECT_SECONDS
    connect_deadline = connect_at + args.connect_budget_base + clients / args.connect_rate_floor
    after = (
        SETTLE_BEFORE_WINDOW
        + args.measure
        + RECORD_TAIL
        + max(1, args.storms) * (args.storm_window + args.settle)
    )
    return Schedule(
        load_start=load_start,
        connect_at=connect_at,
        connect_deadline=connect_deadline,
        load_duration=connect_deadline + after + 10.0 - load_start - args.warmup,
    )


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _rss(process: psutil.Process) -> int:
    return int(process.memory_info().rss)


@dataclass
class ClientProcesses:
    services: list[Service]
    outputs: list[Path]
    ready_files: list[Path]
    control_file: Path


def clients_start(
    harness: Harness,
    setup: Setup,
    args: argparse.Namespace,
    *,
    clients: int,
    port: int,
    schedule: Schedule,
    run_id: str,
) -> ClientProcesses:
    processes = args.client_procs or min(MAX_CLIENT_PROCESSES, -(-clients // CLIENTS_PER_PROCESS))
    processes = min(processes, clients)
    control_file = harness.work_dir / f"{run_id}-window.json"
    started = ClientProcesses([], [], [], control_file)
    for index in range(processes):
        mine = list(range(index, clients, processes))
        ready_file = harness.work_dir / f"{run_id}-clients-{index}.ready"
        spec = {
            "host": "127.0.0.1",
            "port": port,
            "origin": f"http://127.0.0.1:{port}",
            "cookie_name": setup.cookie_name,
            "clients": [[c, setup.wards[c % len(setup.wards)], setup.sessions[c]] for c in mine],
            "connect_at": schedule.connect_at,
            "in_flight": max(1, args.in_flight // processes),
            "handshake_timeout": args.handshake_timeout,
            "catch_up_timeout": args.handshake_timeout,
            "ready_file": str(ready_file),
            "control_file": str(control_file),
            "connect_deadline": schedule.connect_deadline,
            "control_deadline": schedule.connect_deadline + 30.0,
            "storm_window": args.storm_window,
            "ack_interval": args.ack_interval,
            "seed": 1000 * clients + index,
        }
        spec_path = harness.work_dir / f"{run_id}-clients-{index}.spec.json"
        output_path = harness.work_dir / f"{run_id}-clients-{index}.result.json"
        write_json(spec_path, spec)
        started.outputs.append(output_path)
        started.ready_files.append(ready_file)
        started.services.append(
            spawn(
                f"wsclients-{index}",
                [PYTHON, "-m", "bench.wsclients", str(spec_path), str(output_path)],
                env=harness.env,
                log_path=harness.log(f"{run_id}-clients-{index}"),
            )
        )
    return started


def ramp_wait(started: ClientProcesses, schedule: Schedule) -> float | None:
    """Wait (bounded) until every client process had all its clients connect once; the
    moment the last one was ready, None if the ramp ran out of time."""
    while time.time() < schedule.connect_deadline:
        if all(path.exists() for path in started.ready_files):
            return max(
                json.loads(path.read_text(encoding="utf-8"))["ready_at"]
                for path in started.ready_files
            )
        for service in started.services:
            if not service.alive():
                service.fail(f"exited (status {service.process.returncode}) while connecting")
        time.sleep(0.2)
    return None


def fanout_run(
    harness: Harness,
    setup: Setup,
    args: argparse.Namespace,
    *,
    clients: int,
    repeat: int,
    profile: bool,
    profile_ramp: bool = False,
    profile_storm: bool = False,
) -> dict[str, Any]:
    from bench.hospital import bench_alert_state_clear, bench_readings_clear
    from monitoring.events import ward_group_name

    bench_readings_clear()
    bench_alert_state_clear()
    run_id = f"{harness.stamp}-fanout-{clients}-{repeat + 1}"
    lead = 1.5 + args.devices / 250
    daphne: Service | None = None
    dashboard_daphne: Service | None = None
    listener: GroupListener | None = None
    load = None
    started: ClientProcesses | None = None
    profiler: Profiler | None = None
    marks: dict[str, Any] = {}
    stop_file = harness.work_dir / f"{run_id}.stop"

    def daphne_on(port: int, log_name: str, application: str, program: str = "daphne") -> Service:
        return daphne_start(
            env=harness.env,
            port=port,
            log_path=harness.log(f"{run_id}-{log_name}"),
            probe_path=INGEST_PATH,
            probe_status=405,
            backlog=args.daphne_backlog,
            application=application,
            program=program,
        )

    try:
        port = ws_port = free_port()
        if args.dashboard_daphne:
            # Production's layout (docker/compose.yml): devices on uvicorn serving ingestion
            # only (``ingest``), dashboards on a daphne (``web``).
            daphne = daphne_on(port, "ingest", "config.asgi:ingest_application", "uvicorn")
            ws_port = free_port()
            dashboard_daphne = daphne_on(ws_port, "daphne-ws", "config.asgi:application")
        else:
            daphne = daphne_on(port, "daphne", "config.asgi:application")
        server = psutil.Process(daphne.pid)
        # The process holding the dashboards' sockets: its memory and descriptors per connection.
        sockets_server = (
            psutil.Process(dashboard_daphne.pid) if dashboard_daphne is not None else server
        )
        listener = GroupListener([ward_group_name(code) for code in setup.wards]).start()
        schedule = schedule_for(args, clients, lead)
        load = paced_load_start(
            harness,
            tokens_file=setup.tokens_file,
            port=port,
            devices=args.devices,
            duration=schedule.load_duration,
            warmup=args.warmup,
            run_id=run_id,
            celery=setup.celery,
            daphne=daphne,
            trace_devices=range(args.devices),
            lead_seconds=schedule.load_start - time.time(),
            stop_file=stop_file,
        )
        started = clients_start(
            harness, setup, args, clients=clients, port=ws_port, schedule=schedule, run_id=run_id
        )
        paced_load_measure(load)
        _sleep_until(schedule.connect_at - 0.5)
        marks["rss_before"] = _rss(sockets_server)
        marks["fds_before"] = sockets_server.num_fds()
        if profile_ramp:
            profiler = Profiler(
                pid=sockets_server.pid, stem=f"fanout-{harness.stamp}-{clients}-ramp", seconds=16
            ).start()
        ready_at = ramp_wait(started, schedule)
        marks["ramp_seconds"] = (ready_at or time.time()) - schedule.connect_at
        marks["ramp_complete"] = ready_at is not None
        schedule.window_decide(args)
        write_json(started.control_file.with_suffix(".tmp"), schedule.window())
        started.control_file.with_suffix(".tmp").replace(started.control_file)
        _sleep_until(schedule.measure_from)
        marks["rss_connected"] = _rss(sockets_server)
        marks["fds_connected"] = sockets_server.num_fds()
        meters = [
            CpuMeter("daphne", server),
            CpuMeter("celery", psutil.Process(setup.celery.pid)),
            *(
                [CpuMeter("daphne-ws", psutil.Process(dashboard_daphne.pid))]
                if dashboard_daphne is not None
                else []
            ),
            CpuMeter("mariadbd", listening_process(harness.database_port)),
            CpuMeter("redis-server", listening_process(harness.redis_port)),
            *(CpuMeter("loadgen", psutil.Process(s.pid)) for s in load.loadgens),
            *(CpuMeter("clients", psutil.Process(s.pid)) for s in started.services),
        ]
        for meter in meters:
            meter.start()
        busy_start = machine_busy_seconds()
        if profile and profiler is None:
            profiler = Profiler(
                pid=sockets_server.pid,
                stem=f"fanout-{harness.stamp}-{clients}",
                seconds=args.measure,
            ).start()
        _sleep_until(schedule.measure_to)
        cpu: dict[str, float] = Counter()
        per_process: dict[str, float] = {}
        for meter in meters:
            seconds = meter.stop() or 0.0
            cpu[meter.label] += seconds
            per_process[meter.label] = max(per_process.get(meter.label, 0.0), seconds)
        marks["machine_busy"] = machine_busy_seconds() - busy_start
        marks["rss_measured"] = _rss(sockets_server)
        marks["memory_available"] = psutil.virtual_memory().available
        # Memory once each storm has settled: cycles left by a thousand dropped connections wait
        # for a full collection (config/collector.py), so several storms show whether it levels.
        marks["storm_rss"] = []
        for storm_at in schedule.storms:
            if profile_storm and profiler is None:
                _sleep_until(storm_at)
                profiler = Profiler(
                    pid=sockets_server.pid,
                    stem=f"fanout-{harness.stamp}-{clients}-storm",
                    seconds=args.storm_window + args.settle,
                ).start()
            _sleep_until(storm_at + args.storm_window + args.settle - 0.5)
            marks["storm_rss"].append(_rss(sockets_server))
        _sleep_until(schedule.end_at - 0.5)
        marks["rss_after_storm"] = _rss(sockets_server)
        marks["open_files_limit"] = list(sockets_server.rlimit(psutil.RLIMIT_NOFILE))
        for service in started.services:
            try:
                service.process.wait(max(1.0, schedule.end_at + 90 - time.time()))
            except subprocess.TimeoutExpired:
                service.fail("did not finish in time")
            if service.process.returncode != 0:
                service.fail(f"exited with status {service.process.returncode}")
        stop_file.touch()
        outputs, measured = paced_load_finish(load)
        time.sleep(1.0)
        events = listener.stop()
        listener = None
        if not daphne.alive():
            daphne.fail("died during the run")
    finally:
        if listener is not None:
            listener.stop()
        if started is not None:
            for service in started.services:
                service.stop()
        if load is not None:
            paced_load_stop(load)
        if daphne is not None:
            daphne.stop()
        if dashboard_daphne is not None:
            dashboard_daphne.stop()
    profile_result = profiler.finish() if profiler is not None else None
    results = [json.loads(path.read_text(encoding="utf-8")) for path in started.outputs]
    # As bench ingest does: the evaluation backlog drains before the tables are counted, so
    # the summary's evaluated count says whether every stored message was evaluated.
    evaluation_drain = celery_wait_drained(harness, timeout=CELERY_DRAIN_SECONDS)
    ingestion = paced_load_summary(load, outputs, measured)
    window = schedule.measure_to - schedule.measure_from
    run = analyse(
        setup,
        args,
        clients=clients,
        results=results,
        events=events,
        traced=traced_responses(outputs),
        schedule=schedule,
    )
    cpu_percent = {label: 100 * seconds / window for label, seconds in cpu.items()}
    machine = 100 * marks["machine_busy"] / window
    connected = run["connected_initial"]
    run.update(
        ramp_seconds=marks["ramp_seconds"],
        ramp_complete=marks["ramp_complete"],
        connects_per_second=connected / marks["ramp_seconds"] if marks["ramp_seconds"] else None,
        cpu_percent=cpu_percent,
        client_process_max_percent=100 * per_process.get("clients", 0.0) / window,
        machine_busy_percent=machine,
        others_percent=max(0.0, machine - sum(cpu_percent.values())),
        daphne_rss_mib={
            key.removeprefix("rss_"): round(value / 2**20, 1)
            for key, value in marks.items()
            if key.startswith("rss_")
        },
        rss_after_each_storm_mib=[round(value / 2**20, 1) for value in marks["storm_rss"]],
        rss_per_connection_kib=(
            (marks["rss_connected"] - marks["rss_before"]) / 1024 / connected if connected else None
        ),
        daphne_fds={"before": marks["fds_before"], "connected": marks["fds_connected"]},
        daphne_open_files_limit=marks["open_files_limit"],
        memory_available_mib=round(marks["memory_available"] / 2**20),
        ingestion=ingestion,
        ingestion_line=ingestion_line(ingestion),
        evaluation_drain_seconds=evaluation_drain,
        schedule=schedule.__dict__,
    )
    if profile_result is not None:
        run["profile"] = profile_result
    return run


def analyse(
    setup: Setup,
    args: argparse.Namespace,
    *,
    clients: int,
    results: list[dict[str, Any]],
    events: list[tuple[float, dict[str, Any]]],
    traced: dict[tuple[int, int], tuple[int, float]],
    schedule: Schedule,
) -> dict[str, Any]:
    rng = random.Random(clients)
    window = schedule.measure_to - schedule.measure_from

    def committed(bed: str, observed_ms: int) -> float | None:
        device = setup.bed_device.get(bed)
        match = traced.get((device, observed_ms)) if device is not None else None
        return match[1] if match is not None else None

    # The channel layer: when each vitals frame was published, and its readings' latency so far.
    published: dict[str, float] = {}
    pushes_per_ward: Counter[str] = Counter()
    to_publish: list[float] = []
    for received, event in events:
        if event.get("type") != "vitals":
            continue
        key = f"{event['ward']}|{event['seq']}"
        published[key] = received
        if schedule.measure_from <= received < schedule.measure_to:
            pushes_per_ward[event["ward"]] += 1
            for entry in event.get("beds", []):
                for _, observed_ms in entry["vitals"].values():
                    at = committed(entry["bed"], observed_ms)
                    if at is not None:
                        to_publish.append(1000 * (received - at))
    reading_latency: list[float] = []
    fanout: list[float] = []
    per_second: dict[int, list[float]] = {}
    unmatched = 0
    receipts = 0
    for result in results:
        for key, frame in result["frames"].items():
            sent = published.get(key)
            if sent is None or not schedule.measure_from <= sent < schedule.measure_to:
                continue  # published outside the window (or unseen by the listener)
            samples = frame["samples"]
            commits = [committed(bed, observed_ms) for bed, observed_ms in samples]
            second = per_second.setdefault(int(sent - schedule.measure_from), [])
            for received in frame["received"]:
                receipts += 1
                fanout.append(1000 * (received - sent))
                second.append(1000 * (received - sent))
                chosen = (
                    rng.sample(range(len(samples)), args.samples_per_frame)
                    if len(samples) > args.samples_per_frame
                    else range(len(samples))
                )
                for i in chosen:
                    if commits[i] is None:
                        unmatched += 1
                    else:
                        reading_latency.append(1000 * (received - commits[i]))
    timeline = [
        {"second": second, **latency(values)} for second, values in sorted(per_second.items())
    ]
    clients_per_ward = Counter(setup.wards[c % len(setup.wards)] for c in range(clients))
    expected = sum(pushes_per_ward[w] * n for w, n in clients_per_ward.items())
    phases = {
        name: _merge_phase([r["phases"][name] for r in results]) for name in ("initial", "storm")
    }
    closes = {
        phase: dict(sum((Counter(r["closes"][phase]) for r in results), Counter()))
        for phase in ("steady", "storm")
    }
    measured_frames = sum(r["measured_frames"] for r in results)
    return {
        "clients": clients,
        "client_processes": len(results),
        "connected_initial": phases["initial"]["connected"],
        "reading_latency_ms": latency(reading_latency),
        "commit_to_publish_ms": latency(to_publish),
        "publish_to_client_ms": latency(fanout),
        "publish_to_client_timeline": timeline,
        "unmatched_readings": unmatched,
        "vitals_receipts": receipts,
        "vitals_expected": expected,
        "delivered_percent": 100 * receipts / expected if expected else None,
        "frames_per_second": measured_frames / window,
        "megabytes_per_second": sum(r["measured_bytes"] for r in results) / window / 2**20,
        "phases": phases,
        "closes": closes,
        "abnormal_closes": {phase: sum(c.values()) for phase, c in closes.items()},
        "final_close": dict(sum((Counter(r["final_close"]) for r in results), Counter())),
        "messages": dict(sum((Counter(r["messages"]) for r in results), Counter())),
        "acks_sent": sum(r["acks_sent"] for r in results),
        "gaps_at_end": sum(r["gaps_at_end"] for r in results),
        "client_cpu_seconds": [r["cpu_seconds"] for r in results],
    }


def _merge_phase(phases: list[dict[str, Any]]) -> dict[str, Any]:
    handshake = sorted(ms for p in phases for ms in p["handshake_ms"])
    catch_up = sorted(ms for p in phases for ms in p["catch_up_ms"])
    replays = [n for p in phases for n in p["replay_events"]]
    failures = sum((Counter(p["failures"]) for p in phases), Counter())
    outcomes = sum((Counter(p["catch_up"]) for p in phases), Counter())
    return {
        "attempts": sum(p["attempts"] for p in phases),
        "connected": sum(p["connected"] for p in phases),
        "gave_up": sum(p["gave_up"] for p in phases),
        "failures": dict(failures),
        "failed_handshakes": sum(failures.values()),
        "non_101": sum(n for kind, n in failures.items() if kind.startswith("http_")),
        "catch_up": dict(outcomes),
        "handshake_ms": latency(handshake),
        "catch_up_ms": latency(catch_up),
        "replay_events_mean": sum(replays) / len(replays) if replays else None,
    }


def step_limit(run: dict[str, Any], *, daphne_ceiling: float) -> str | None:
    """Why the machine does not hold this step (None: it does)."""
    initial, storm = run["phases"]["initial"], run["phases"]["storm"]
    if not run["ramp_complete"]:
        return f"connecting took longer than its budget ({run['ramp_seconds']:.0f} s)"
    if initial["failed_handshakes"] or initial["gave_up"]:
        return f"{initial['failed_handshakes']} failed handshakes while connecting"
    if storm["failed_handshakes"] or storm["gave_up"]:
        return f"{storm['failed_handshakes']} failed handshakes in the reconnect storm"
    abnormal = sum(run["abnormal_closes"].values())
    if abnormal:
        return f"{abnormal} connections closed by the server or lost"
    missing = sum(n for kind, n in storm["catch_up"].items() if kind not in ("replay", "snapshot"))
    if missing:
        return f"{missing} reconnects without a replay or snapshot"
    delivered = run["delivered_percent"]
    if delivered is not None and delivered < 99.0:
        return f"only {delivered:.1f}% of the vitals frames delivered"
    daphne = run["cpu_percent"].get("daphne", 0.0)
    if daphne >= daphne_ceiling:
        return f"daphne at {daphne:.0f}% of its one core"
    if run["memory_available_mib"] < 0.1 * psutil.virtual_memory().total / 2**20:
        return "less than 10% of the memory available"
    return None
