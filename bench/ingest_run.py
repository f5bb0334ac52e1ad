"""One run of an ingestion scenario: daphne up, the load generators, CPU, the database check.

bench.ingest drives the runs; this module knows what a run is and what it measures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    LOG_DIR,
    PYTHON,
    percentile,
    result_path,
    write_json,
)
from bench.processes import (
    CpuMeter,
    Service,
    celery_drain,
    celery_queue_depth,
    daphne_start,
    free_port,
    listening_process,
    machine_busy_seconds,
    spawn,
)
from bench.profiling import Profiler

INGEST_PATH = "/api/v1/ingest/"  # config.asgi.INGEST_PATH (not imported: that loads Django)

# The batched scenario measures the write path, not the per-device allowance, so its daphne
# runs with the rate limit lifted (and says so in the output).
LIFTED_RATE_LIMIT = {"INGEST_RATE_PER_SECOND": "1000000", "INGEST_BURST": "1000000"}

PACED_GRACE_SECONDS = 5.0  # how late a paced send may still start after the duration
SEED = 20251121
CELERY_DRAIN_SECONDS = 120.0  # bound on waiting for the worker to empty its queue after a run

# What a bedside monitor sends each second, from the catalogue, with values inside the NEWS2
# zero-score bands of ../shared/clinical.md (diastolic BP is not scored): stable patients, so
# the run measures the alert engine's evaluation, not an alarm storm.
_READING_RANGES = (
    ("HEART_RATE", 55.0, 90.0),
    ("SPO2", 96.0, 99.0),
    ("RESPIRATORY_RATE", 12.0, 20.0),
    ("SYSTOLIC_BP", 111.0, 150.0),
    ("DIASTOLIC_BP", 60.0, 90.0),
    ("BODY_TEMPERATURE", 36.2, 37.8),
)
BEDSIDE_READINGS = len(_READING_RANGES)  # readings in each paced message


def bedside_vitals() -> list[dict[str, Any]]:
    from monitoring import vitals  # the catalogue is plain Python, no Django needed

    catalogue = [(getattr(vitals, name), low, high) for name, low, high in _READING_RANGES]
    return [
        {"code": v.code, "unit": v.unit, "low": low, "high": high, "decimals": v.decimals}
        for v, low, high in catalogue
    ]


@dataclass(frozen=True)
class Scenario:
    kind: str  # "paced" | "batched"
    devices: int
    duration: float
    batch_size: int  # readings per message
    connections: int
    rate: float = 0.0  # paced: messages per second per device
    # Sent before the measured duration and left out of its figures (not of the checks): the
    # first requests open the writer threads' connections and warm Django and Celery up.
    warmup: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "paced":
            return f"paced-{self.devices}"
        return f"batched-{self.batch_size}"

    @property
    def label(self) -> str:
        if self.kind == "paced":
            return f"paced {self.devices} dev × {self.rate:g} Hz"
        return f"batched {self.batch_size} rdg/msg × {self.connections} conn"

    @property
    def offered(self) -> str:
        if self.kind == "paced":
            return f"{self.devices * self.rate:,.0f} msg/s"
        return "max"


@dataclass
class Context:
    args: argparse.Namespace
    stamp: str
    env: dict[str, str]
    work_dir: Path
    tokens_file: Path
    vitals: list[dict[str, Any]]
    celery: Service | None
    target: tuple[str, int] | None  # --url
    database_port: int
    redis_port: int

    def server_env(self, scenario: Scenario) -> dict[str, str]:
        if scenario.kind == "batched":
            return {**self.env, **LIFTED_RATE_LIMIT}
        return self.env


def loadgen_specs(
    ctx: Context, scenario: Scenario, *, run_id: str, host: str, port: int, start_at: float
) -> list[dict[str, Any]]:
    processes = min(ctx.args.loadgen_procs, scenario.connections)
    base = {
        "mode": scenario.kind,
        "run_id": run_id,
        "host": host,
        "port": port,
        "path": INGEST_PATH,
        "tokens_file": str(ctx.tokens_file),
        "total_devices": scenario.devices,
        "start_at": start_at,
        "duration": scenario.warmup + scenario.duration,
        "measure_from": scenario.warmup,
        "grace": PACED_GRACE_SECONDS,
        "request_timeout": ctx.args.request_timeout,
        "rate": scenario.rate,
        "batch_size": scenario.batch_size,
        "seed": SEED,
        "vitals": ctx.vitals,
    }
    specs = []
    for process in range(processes):
        if scenario.kind == "paced":
            devices = list(range(process, scenario.devices, processes))
            connections: list[tuple[int, list[int]]] = []
        else:
            # Connection c rotates over devices c, c + C, c + 2C, …: no device is shared.
            connections = [
                (c, list(range(c, scenario.devices, scenario.connections)))
                for c in range(process, scenario.connections, processes)
            ]
            devices = [d for _, ds in connections for d in ds]
        specs.append({**base, "devices": devices, "connections": connections})
    return specs


def verify(acked: dict[str, int]) -> dict[str, Any]:
    """Compare what the devices were told (201 + accepted) with what MariaDB holds."""
    from django.db.models import Count, Q

    from bench.hospital import SERIAL_PREFIX
    from monitoring.models import IngestMessage, Observation

    messages = IngestMessage.objects.filter(device__serial__startswith=SERIAL_PREFIX)
    rows = Observation.objects.filter(device__serial__startswith=SERIAL_PREFIX).aggregate(
        rows=Count("id"), without_patient=Count("id", filter=Q(patient__isnull=True))
    )
    stored = dict(
        messages.annotate(readings=Count("observations")).values_list("message_id", "readings")
    )
    acknowledged_readings = sum(acked.values())
    missing = sorted(mid for mid, accepted in acked.items() if stored.get(mid) != accepted)
    return {
        "ok": rows["rows"] == acknowledged_readings and not missing,
        "acknowledged_messages": len(acked),
        "acknowledged_readings": acknowledged_readings,
        "stored_rows": rows["rows"],
        "stored_messages": len(stored),
        "acknowledged_but_missing": len(missing),
        "missing_examples": missing[:5],
        "stored_but_not_acknowledged": len(stored.keys() - acked.keys()),
        "rows_without_patient": rows["without_patient"],
        # Evaluated by the alert engine once Celery's queue drained (see run_once).
        "evaluated_messages": messages.filter(evaluated_at__isnull=False).count(),
        "unevaluated_examples": list(
            messages.filter(evaluated_at__isnull=True).values_list("message_id", flat=True)[:5]
        ),
    }


def _latency(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 0.50),
        "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else None,
    }


def _timeline(
    intended: list[float], done: list[float], status: list[int | str]
) -> list[dict[str, Any]]:
    """Per second of the schedule: sends, 201s and latency from the intended time, so a stall
    (a checkpoint, a lock, a pause) shows where a percentile only says that it happened."""
    seconds: dict[int, list[int]] = {}
    for index, moment in enumerate(intended):
        seconds.setdefault(int(moment), []).append(index)
    timeline = []
    for second in sorted(seconds):
        indices = seconds[second]
        latency = _latency([1000 * (done[i] - intended[i]) for i in indices])
        timeline.append(
            {
                "second": second,
                "sent": len(indices),
                "acknowledged": sum(1 for i in indices if status[i] == 201),
                "p50_ms": latency["p50"],
                "p99_ms": latency["p99"],
                "max_ms": latency["max"],
            }
        )
    return timeline


def summarize(
    scenario: Scenario,
    outputs: list[dict[str, Any]],
    *,
    cpu_seconds: dict[str, float | None],
    wall: float,
    machine_busy: float,
    verification: dict[str, Any],
) -> dict[str, Any]:
    records: dict[str, list[Any]] = {key: [] for key in outputs[0]["records"]}
    for output in outputs:
        for key, values in output["records"].items():
            records[key] += values
    intended, sent, done, status = (records[k] for k in ("intended", "sent", "done", "status"))
    accepted = records["accepted"]
    # Errors count over the whole run, warm-up included; rates and latencies over the window.
    errors = Counter(str(s) for s in status if s != 201)
    unsent = sum(output["unsent"] for output in outputs)
    if unsent:
        errors["unsent"] = unsent
    measured = [i for i, moment in enumerate(intended) if moment >= scenario.warmup]
    answered = [i for i in measured if isinstance(status[i], int)]
    window = (max(done[i] for i in measured) - min(sent[i] for i in measured)) if measured else 0.0
    ok = sum(1 for i in measured if status[i] == 201)
    readings = sum(accepted[i] for i in measured if status[i] == 201)
    loadgen_cpu = sum(output["cpu_seconds"] for output in outputs)
    cpu_percent = {
        label: (100 * seconds / wall if seconds is not None else None)
        for label, seconds in {**cpu_seconds, "loadgen": loadgen_cpu}.items()
    }
    ours = sum(value for value in cpu_percent.values() if value is not None)
    machine_percent = 100 * machine_busy / wall
    return {
        "requests": len(status),
        "warmup_requests": len(status) - len(measured),
        "measured_requests": len(measured),
        "answered": len(answered),
        "acknowledged": ok,
        "window_seconds": window,
        "requests_per_second": ok / window if window else 0.0,
        "readings_per_second": readings / window if window else 0.0,
        "latency_ms": _latency([1000 * (done[i] - sent[i]) for i in answered]),
        "latency_from_intended_ms": _latency([1000 * (done[i] - intended[i]) for i in answered]),
        "send_lag_ms": _latency([1000 * (sent[i] - intended[i]) for i in measured]),
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "cpu_percent": cpu_percent,
        "loadgen_percent_per_process": 100 * max(o["cpu_seconds"] for o in outputs) / wall,
        "machine_busy_percent": machine_percent,
        "others_percent": max(0.0, machine_percent - ours),
        "late_start_seconds": max(output["late_start_seconds"] for output in outputs),
        "connect_errors": sum(output["connect_errors"] for output in outputs),
        "duplicate_acks": sum(output["duplicate_acks"] for output in outputs),
        "verification": verification,
        "timeline": _timeline(intended, done, status),
    }


_TASK_FAILURE = re.compile(
    r"Task (?P<task>[\w.]+)\[[^\]]+\] raised unexpected: (?P<error>.{0,120})"
)


def _task_failures(log_path: Path | None, offset: int) -> dict[str, int]:
    """Celery task failures the worker logged during the run, by task and error."""
    if log_path is None or not log_path.exists():
        return {}
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", errors="replace")
    return dict(Counter(f"{m['task']}: {m['error']}" for m in _TASK_FAILURE.finditer(text)))


def run_once(ctx: Context, scenario: Scenario, repeat: int, *, profile: bool) -> dict[str, Any]:
    from bench.hospital import bench_readings_clear

    bench_readings_clear()
    celery_log = ctx.celery.log_path if ctx.celery is not None else None
    celery_log_offset = celery_log.stat().st_size if celery_log and celery_log.exists() else 0
    run_id = f"{ctx.stamp}-{scenario.name}-{repeat + 1}"
    log_stem = f"ingest-{ctx.stamp}-{scenario.name}-{repeat + 1}"
    daphne: Service | None = None
    loadgens: list[Service] = []
    profiler: Profiler | None = None
    try:
        if ctx.target is None:
            host, port = "127.0.0.1", free_port()
            daphne = daphne_start(
                env=ctx.server_env(scenario),
                port=port,
                log_path=LOG_DIR / f"{log_stem}-daphne.log",
                probe_path=INGEST_PATH,
                probe_status=405,  # the ingest path's answer to GET: no database involved
                **(
                    {"program": "uvicorn", "application": "config.asgi:ingest_application"}
                    if ctx.args.server == "uvicorn"
                    else {}
                ),
            )
            server: psutil.Process | None = psutil.Process(daphne.pid)
        else:
            host, port = ctx.target
            server = listening_process(port)
        meters = [
            CpuMeter("daphne", server),
            CpuMeter("celery", psutil.Process(ctx.celery.pid) if ctx.celery else None),
            CpuMeter("mariadbd", listening_process(ctx.database_port)),
            CpuMeter("redis-server", listening_process(ctx.redis_port)),
        ]
        # Time for the generators to start and open their connections before the common start.
        start_at = time.time() + 1.5 + scenario.connections / 250
        outputs_paths = []
        for index, spec in enumerate(
            loadgen_specs(ctx, scenario, run_id=run_id, host=host, port=port, start_at=start_at)
        ):
            spec_path = ctx.work_dir / f"{run_id}-{index}.spec.json"
            output_path = ctx.work_dir / f"{run_id}-{index}.result.json"
            write_json(spec_path, spec)
            outputs_paths.append(output_path)
            loadgens.append(
                spawn(
                    f"loadgen-{index}",
                    [PYTHON, "-m", "bench.loadgen", str(spec_path), str(output_path)],
                    env=os.environ,
                    log_path=LOG_DIR / f"{log_stem}-loadgen-{index}.log",
                )
            )
        time.sleep(max(0.0, start_at + scenario.warmup - time.time()))
        for meter in meters:
            meter.start()
        busy_start, wall_start = machine_busy_seconds(), time.monotonic()
        if profile and server is not None:
            profiler = Profiler(
                pid=server.pid, stem=f"ingest-{ctx.stamp}", seconds=scenario.duration
            ).start()
        limit = wall_start + scenario.duration + PACED_GRACE_SECONDS + ctx.args.request_timeout + 60
        for loadgen in loadgens:
            try:
                loadgen.process.wait(max(1.0, limit - time.monotonic()))
            except subprocess.TimeoutExpired:
                loadgen.fail("did not finish in time")
        wall = time.monotonic() - wall_start
        cpu_seconds = {meter.label: meter.stop() for meter in meters}
        machine_busy = machine_busy_seconds() - busy_start
        for loadgen in loadgens:
            if loadgen.process.returncode != 0:
                loadgen.fail(f"exited with status {loadgen.process.returncode}")
        if daphne is not None and not daphne.alive():
            daphne.fail("died during the run")
        outputs = [json.loads(path.read_text(encoding="utf-8")) for path in outputs_paths]
        celery_backlog = celery_queue_depth(ctx.args.redis_url)
        # The ingest process sends its coalesced after-commit work (evaluation requests every
        # 0.1 s, ward pushes every 0.5 s) on a tick; let the last tick go out before stopping it.
        time.sleep(1.0)
    finally:
        for loadgen in loadgens:
            loadgen.stop()
        if daphne is not None:
            daphne.stop()  # nothing is in flight once it is gone: the tables are final
    if ctx.target is not None:
        time.sleep(2)  # a server we do not own may still be committing timed-out requests
    # The alert engine's backlog is part of the cost of ingesting; the next run must not pay it.
    # Without a worker of ours (--url) nothing may consume the queue: do not wait long for it.
    drain_timeout = CELERY_DRAIN_SECONDS if ctx.celery is not None else 10.0
    drained_in = celery_drain(ctx.args.redis_url, timeout=drain_timeout)
    profile_result = profiler.finish() if profiler is not None else None
    acked: dict[str, int] = {}
    for output in outputs:
        acked.update(output["acked"])
    summary = summarize(
        scenario,
        outputs,
        cpu_seconds=cpu_seconds,
        wall=wall,
        machine_busy=machine_busy,
        verification=verify(acked),
    )
    summary["celery"] = {
        "queued_at_end": celery_backlog,
        "drain_seconds": drained_in,
        "task_failures": _task_failures(celery_log, celery_log_offset),
    }
    if ctx.args.keep_records:
        records_path = result_path(log_stem, "-records.json.gz")
        with gzip.open(records_path, "wt", encoding="utf-8") as records_file:
            json.dump([output["records"] for output in outputs], records_file)
        summary["records_file"] = str(records_path)
    if profile_result is not None:
        summary["profile"] = profile_result
    return summary
