"""What ``bin/bench alerts``, ``fanout`` and ``api`` share: the prepared bench environment and
the 300-device paced ingestion load running in the background while they measure something else.

``harness_open`` does, for any benchmark, what ``bench.ingest`` does before its scenarios: the
bench environment for every process (this one included), MariaDB and Redis up, the bench
database created and migrated, Django set up, stale Celery tasks dropped. ``paced_load_start``
/ ``paced_load_finish`` run ``bench.loadgen`` exactly as the ingestion benchmark's paced
scenario does (same specs, same summary, same stored = acknowledged check), optionally with
desaturation overrides and traced devices.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    LOG_DIR,
    PYTHON,
    BenchError,
    local_endpoint,
    percentile,
    portal_env,
    say,
    utc_stamp,
    write_json,
)
from bench.processes import (
    CpuMeter,
    Service,
    celery_drain,
    listening_process,
    machine_busy_seconds,
    mariadb_ensure,
    redis_ensure,
    run_tool,
    spawn,
)

# The channel-layer prefix of every portal process a bench starts and of its own listeners.
# Not "portal": Redis pub/sub ignores the database number, so a bench on db 5 with the default
# prefix would hear (and be heard by) any other portal on the same Redis server.
CHANNEL_LAYER_PREFIX = "portal-bench"
BUSY_LOAD_AVERAGE = 0.5


@dataclass
class Harness:
    name: str
    stamp: str
    started_at: dt.datetime
    env: dict[str, str]
    database_url: str
    redis_url: str
    database_port: int
    redis_port: int
    work_dir: Path
    load_before: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)

    def log(self, what: str) -> Path:
        what = what.removeprefix(f"{self.stamp}-")  # run ids start with the stamp too
        return LOG_DIR / f"{self.name}-{self.stamp}-{what}.log"

    def machine(self) -> dict[str, Any]:
        return {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_before": list(self.load_before),
            # Set in the shell, these change what the servers do (config/collector.py).
            "collector_environment": {
                name: os.environ[name]
                for name in ("GC_THRESHOLDS", "GC_FULL_COLLECTION_SECONDS")
                if name in os.environ
            },
        }

    def header(self, title: str, repeat: int) -> str:
        return (
            f"{title} {self.started_at.isoformat(timespec='seconds')} "
            f"({psutil.cpu_count()} CPUs, load average before {self.load_before[0]:.2f})"
            + (f", medians of {repeat} runs" if repeat > 1 else ", single run")
        )


def open_files_raise() -> tuple[int, int]:
    """Lift this process's open-files soft limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def harness_open(
    stack: contextlib.ExitStack,
    *,
    name: str,
    database_url: str,
    redis_url: str,
    extra_env: Mapping[str, str] | None = None,
) -> Harness:
    stamp = utc_stamp()
    load_before = psutil.getloadavg()
    env = portal_env(
        database_url=database_url,
        redis_url=redis_url,
        extra={"CHANNEL_LAYER_PREFIX": CHANNEL_LAYER_PREFIX, **(extra_env or {})},
    )
    os.environ.clear()
    os.environ.update(env)
    harness = Harness(
        name=name,
        stamp=stamp,
        started_at=dt.datetime.now(dt.UTC),
        env=env,
        database_url=database_url,
        redis_url=redis_url,
        database_port=local_endpoint(database_url, 3306)[1],
        redis_port=local_endpoint(redis_url, 6379)[1],
        work_dir=Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-"))),
        load_before=load_before,
    )
    if load_before[0] > BUSY_LOAD_AVERAGE:
        harness.notes.append(
            f"the machine was not idle (load average {load_before[0]:.2f} before the run): "
            "treat the figures as indicative and rerun alone."
        )
    for server, ensure, url in (
        ("mariadbd", mariadb_ensure, database_url),
        ("redis-server", redis_ensure, redis_url),
    ):
        service = ensure(url, harness.log(server))
        if service is not None:
            stack.callback(service.stop)
    say("preparing the bench database (create, migrate)")
    run_tool(["bin/ensure-database"], env=env, timeout=60)
    run_tool(["manage.py", "migrate", "--no-input", "-v", "0"], env=env, timeout=600)
    import django

    django.setup()
    from django.conf import settings

    if "bench" not in settings.DATABASES["default"]["NAME"]:
        raise BenchError(
            "the bench empties its tables: --database-url must name a *bench* database"
        )
    from config.celery import app as celery_app

    stale = celery_app.control.purge()
    if stale:
        say(f"dropped {stale} stale Celery task(s) from {redis_url}")
    return harness


def device_tokens_file(harness: Harness, *, count: int) -> tuple[list[Any], Path]:
    """The first ``count`` bench devices (created if missing) and a private file of fresh
    tokens for the load generator, in the same order."""
    from bench.hospital import bench_device_tokens_issue, bench_devices_ensure

    devices = bench_devices_ensure(count=count)
    tokens = bench_device_tokens_issue(devices=devices)
    path = harness.work_dir / "tokens.json"  # the directory is private (0700)
    path.write_text(json.dumps(tokens), encoding="utf-8")
    return devices, path


def latency(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else None,
    }


# --- the paced ingestion load, in the background --------------------------------------------


@dataclass
class PacedLoad:
    scenario: Any  # bench.ingest_run.Scenario
    loadgens: list[Service]
    outputs_paths: list[Path]
    start_at: float  # time.time() of the load generators' common start (t0)
    measure_at: float  # time.time() the measured window starts (after the warm-up)
    meters: list[CpuMeter]
    busy_start: float = 0.0
    wall_start: float = 0.0


def paced_load_start(
    harness: Harness,
    *,
    tokens_file: Path,
    port: int,
    devices: int,
    duration: float,
    warmup: float,
    run_id: str,
    celery: Service | None,
    daphne: Service | None,
    overrides: Sequence[dict[str, Any]] = (),
    trace_devices: Sequence[int] = (),
    loadgen_procs: int = 1,
    request_timeout: float = 10.0,
    lead_seconds: float | None = None,
    stop_file: Path | None = None,
) -> PacedLoad:
    """Start ``devices`` paced devices at 1 Hz (six readings each) against 127.0.0.1:``port``.

    The load starts ``lead_seconds`` from now (default: time for the generators to connect).
    """
    from bench.ingest_run import BEDSIDE_READINGS, Context, Scenario, bedside_vitals, loadgen_specs

    scenario = Scenario("paced", devices, duration, BEDSIDE_READINGS, devices, 1.0, warmup)
    ctx = Context(
        args=argparse.Namespace(loadgen_procs=loadgen_procs, request_timeout=request_timeout),
        stamp=harness.stamp,
        env=harness.env,
        work_dir=harness.work_dir,
        tokens_file=tokens_file,
        vitals=bedside_vitals(),
        celery=celery,
        target=None,
        database_port=harness.database_port,
        redis_port=harness.redis_port,
    )
    lead = lead_seconds if lead_seconds is not None else 1.5 + devices / 250
    start_at = time.time() + lead
    traced = set(trace_devices)
    loadgens, outputs = [], []
    specs = loadgen_specs(
        ctx, scenario, run_id=run_id, host="127.0.0.1", port=port, start_at=start_at
    )
    for index, spec in enumerate(specs):
        mine = set(spec["devices"])
        spec["overrides"] = [o for o in overrides if o["device"] in mine]
        spec["trace_devices"] = sorted(traced & mine)
        spec["stop_file"] = str(stop_file) if stop_file else ""
        spec_path = harness.work_dir / f"{run_id}-{index}.spec.json"
        output_path = harness.work_dir / f"{run_id}-{index}.result.json"
        write_json(spec_path, spec)
        outputs.append(output_path)
        loadgens.append(
            spawn(
                f"loadgen-{index}",
                [PYTHON, "-m", "bench.loadgen", str(spec_path), str(output_path)],
                env=os.environ,
                log_path=harness.log(f"{run_id}-loadgen-{index}"),
            )
        )
    meters = [
        CpuMeter("daphne", psutil.Process(daphne.pid) if daphne else None),
        CpuMeter("celery", psutil.Process(celery.pid) if celery else None),
        CpuMeter("mariadbd", listening_process(harness.database_port)),
        CpuMeter("redis-server", listening_process(harness.redis_port)),
    ]
    return PacedLoad(scenario, loadgens, outputs, start_at, start_at + warmup, meters)


def paced_load_measure(load: PacedLoad) -> None:
    """Sleep until the warm-up is over, then start the CPU meters."""
    time.sleep(max(0.0, load.measure_at - time.time()))
    for meter in load.meters:
        meter.start()
    load.busy_start, load.wall_start = machine_busy_seconds(), time.monotonic()


def paced_load_finish(
    load: PacedLoad, *, extra_cpu: Mapping[str, float | None] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Wait for the load generators; return their outputs and the measuring context
    (``wall``, ``cpu_seconds``, ``machine_busy``) for ``paced_load_summary``."""
    scenario = load.scenario
    limit = load.wall_start + scenario.duration + 5.0 + 10.0 + 60  # loadgen grace + timeout
    for loadgen in load.loadgens:
        try:
            loadgen.process.wait(max(1.0, limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            loadgen.fail("did not finish in time")
    wall = time.monotonic() - load.wall_start
    cpu_seconds = {meter.label: meter.stop() for meter in load.meters}
    cpu_seconds.update(extra_cpu or {})
    machine_busy = machine_busy_seconds() - load.busy_start
    for loadgen in load.loadgens:
        if loadgen.process.returncode != 0:
            loadgen.fail(f"exited with status {loadgen.process.returncode}")
    outputs = [json.loads(path.read_text(encoding="utf-8")) for path in load.outputs_paths]
    return outputs, {"wall": wall, "cpu_seconds": cpu_seconds, "machine_busy": machine_busy}


def paced_load_stop(load: PacedLoad) -> None:
    for loadgen in load.loadgens:
        loadgen.stop()


def paced_load_summary(
    load: PacedLoad, outputs: list[dict[str, Any]], measured: dict[str, Any]
) -> dict[str, Any]:
    """The ingestion benchmark's summary of the background load (daphne must be stopped:
    the stored = acknowledged check needs nothing in flight)."""
    from bench.ingest_run import summarize, verify

    acked: dict[str, int] = {}
    for output in outputs:
        acked.update(output["acked"])
    summary = summarize(
        load.scenario,
        outputs,
        cpu_seconds=measured["cpu_seconds"],
        wall=measured["wall"],
        machine_busy=measured["machine_busy"],
        verification=verify(acked),
    )
    return summary


def traced_responses(outputs: list[dict[str, Any]]) -> dict[tuple[int, int], tuple[int, float]]:
    """(device index, observed_at in epoch ms) → (message number, wall time of its 201)."""
    traced: dict[tuple[int, int], tuple[int, float]] = {}
    for output in outputs:
        for device, entries in output.get("trace", {}).items():
            for number, observed_at, answered_at, status in entries:
                if status == 201:
                    traced[(int(device), epoch_ms(observed_at))] = (number, answered_at)
    return traced


def epoch_ms(moment: str) -> int:
    """An ISO 8601 instant (``…Z`` or ``…+00:00``, any fraction) as integer epoch milliseconds,
    rounded down exactly as the server writes times into vitals frames."""
    return (dt.datetime.fromisoformat(moment) - _EPOCH) // dt.timedelta(milliseconds=1)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def celery_wait_drained(harness: Harness, timeout: float) -> float | None:
    return celery_drain(harness.redis_url, timeout=timeout)


def ingestion_line(summary: dict[str, Any]) -> str:
    """The background load in one line, under a benchmark's own table."""
    lat = summary["latency_from_intended_ms"]
    errors = summary["errors"]
    verified = "ok" if summary["verification"]["ok"] else "FAIL"
    shown = " ".join(f"{kind}:{count:g}" for kind, count in sorted(errors.items()) if count)
    return (
        f"{summary['requests_per_second']:,.0f} msg/s acknowledged, ingest p50/p99 "
        f"{lat['p50'] or 0:,.0f}/{lat['p99'] or 0:,.0f} ms (from intended send), errors "
        f"{shown or '0'}, stored=acked {verified}"
    )
