"""``bin/bench alerts``: the alert engine's throughput and its latency under ingestion load.

Two parts (bench/README.md, "bin/bench alerts"):

* ``throughput``: a backlog of stored, not yet evaluated device messages (six readings each) is
  evaluated by one Celery worker process, prefork concurrency 1 and 2, fed with
  ``evaluate_messages`` tasks of ``--task-batch`` message ids as the dispatcher sends them.
* ``latency``: 300 paced devices post for 60 s through daphne with a real worker; cohorts of
  devices desaturate (SpO2 84 %) at known times, and the time from the acknowledgement of the
  reading that completes the rule's 10 s sustain to the "fired" event on the ward's
  channel-layer group is measured, with the evaluation lag of every message.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.alerts_run import backlog_store, latency_run, throughput_run
from bench.common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    bench_main,
    fmt,
    results_report,
    say,
    table,
)
from bench.harness import Harness, harness_open

PARTS = ("throughput", "latency")
TARGET_FIRED_P99_MS = 1000.0
MIN_FIRINGS = 50
CPU_HEADERS = ["CPU, % of one core", "daphne", "celery", "mariadb", "loadgen", "machine", "others"]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 1,2")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/bench alerts",
        description="Benchmark the alert engine: evaluation throughput of one Celery worker, "
        "and the time from ingestion to a fired alert under 300-device load.",
        epilog="Run it alone on the machine, three times (--repeat 3), and quote the medians.",
    )
    add = parser.add_argument
    add("--parts", default="throughput,latency", help="comma list of throughput, latency")
    add("--quick", action="store_true", help="smoke test: small backlog, 60 devices for 25 s")
    add("--repeat", type=int, default=1, help="runs of each part; the table shows medians")
    group = parser.add_argument_group("throughput")
    group.add_argument("--patients", type=int, help="patients in the backlog (default 300)")
    group.add_argument(
        "--messages", type=int, help="messages in the backlog, six readings each (default 18000)"
    )
    group.add_argument("--task-batch", type=int, default=100, help="message ids per task")
    group.add_argument(
        "--concurrency",
        type=_int_list,
        default=[1, 2],
        help="prefork pool sizes of the one worker (default 1,2; 2 is Celery's default here)",
    )
    group = parser.add_argument_group("latency")
    group.add_argument("--devices", type=int, help="paced devices at 1 Hz (default 300)")
    group.add_argument("--duration", type=float, help="measured seconds (default 60)")
    group.add_argument("--warmup", type=float, help="seconds of load before (default 2)")
    group.add_argument("--cohorts", type=int, help="desaturating cohorts, staggered (default 6)")
    group.add_argument("--cohort-size", type=int, help="devices per cohort (default 12)")
    group.add_argument("--spo2", type=float, default=84.0, help="SpO2 a desaturating device sends")
    group.add_argument("--loadgen-procs", type=int, default=1)
    add("--database-url", default=DEFAULT_DATABASE_URL)
    add("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    if not parts or not parts <= set(PARTS):
        parser.error("--parts takes throughput, latency or both")
    args.part_set = parts
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat is between 1 and 20")
    q = args.quick
    args.patients = args.patients or (36 if q else 300)
    args.messages = args.messages or (720 if q else 18_000)
    args.devices = args.devices or (60 if q else 300)
    args.duration = args.duration or (25.0 if q else 60.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 2.0)
    args.cohorts = args.cohorts or (2 if q else 6)
    args.cohort_size = args.cohort_size or (5 if q else 12)
    if not 1 <= args.patients <= 5000 or not args.patients <= args.messages <= 1_000_000:
        parser.error("--patients 1..5000, --messages from --patients to 1,000,000")
    if not 1 <= args.task_batch <= 1000 or max(args.concurrency) > 16:
        parser.error("--task-batch 1..1000, --concurrency at most 16")
    if not 1 <= args.devices <= 5000 or not 15 <= args.duration <= 3600:
        parser.error("--devices 1..5000, --duration 15..3600 s")
    if args.cohorts * args.cohort_size > args.devices:
        parser.error("--cohorts × --cohort-size must not exceed --devices")
    if not 0 <= args.spo2 < 90:
        parser.error("--spo2 must be below the rule's 90 % (and at least 0)")
    return args


# --- report ---------------------------------------------------------------------------------


def _median(values: list[Any]) -> Any:
    present = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(present) if present else None


def _dig(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def median_of(runs: list[dict[str, Any]], paths: Sequence[str]) -> dict[str, Any]:
    return {path: _median([_dig(run, path) for run in runs]) for path in paths}


THROUGHPUT_FIGURES = (
    "messages_per_second",
    "readings_per_second",
    "seconds",
    "enqueue_seconds",
    "cpu_percent.celery",
    "cpu_percent.mariadbd",
    "cpu_percent.redis-server",
    "machine_busy_percent",
    "others_percent",
    "alerts_fired",
    "task_failures_total",
)
LATENCY_FIGURES = (
    "fired_latency_ms.p50",
    "fired_latency_ms.p95",
    "fired_latency_ms.p99",
    "fired_latency_ms.max",
    "fired_latency_ms.count",
    "reading_to_fired_ms.p50",
    "reading_to_fired_ms.p99",
    "queue_wait_ms.p50",
    "queue_wait_ms.p99",
    "evaluate_to_event_ms.p50",
    "evaluate_to_event_ms.p99",
    "evaluation_lag_ms.p50",
    "evaluation_lag_ms.p95",
    "evaluation_lag_ms.p99",
    "evaluation_lag_ms.max",
    "evaluation_lag_received_to_201_ms.p50",
    "evaluation_lag_received_to_201_ms.p99",
    "evaluation_lag_201_to_evaluated_ms.p50",
    "evaluation_lag_201_to_evaluated_ms.p99",
    "missing_firings",
    "ingestion.latency_from_intended_ms.p99",
    "ingestion.error_count",
    "ingestion.cpu_percent.daphne",
    "ingestion.cpu_percent.celery",
    "ingestion.cpu_percent.mariadbd",
    "ingestion.cpu_percent.loadgen",
    "ingestion.machine_busy_percent",
    "ingestion.others_percent",
)


def targets_check(document: dict[str, Any]) -> list[dict[str, Any]]:
    latency = document.get("latency")
    if not latency:
        return [{"target": "fired p99", "passed": None, "text": "latency part not run"}]
    median = latency["median"]
    p99 = median["fired_latency_ms.p99"]
    runs = latency["runs"]
    samples = sum(run["fired_latency_ms"]["count"] for run in runs)
    missing = sum(run["missing_firings"] for run in runs)
    passed = p99 is not None and p99 < TARGET_FIRED_P99_MS and missing == 0
    text = (
        f"ingestion commit → 'fired' on the ward group: p99 {fmt(p99, 0)} ms < "
        f"{TARGET_FIRED_P99_MS:,.0f} ms, every desaturation fired ({missing} missing), "
        f"{samples} samples over {len(runs)} run(s)"
    )
    checks = [{"target": "fired p99", "passed": passed, "text": text}]
    if samples < MIN_FIRINGS:
        checks.append(
            {
                "target": "samples",
                "passed": False,
                "text": f"at least {MIN_FIRINGS} firings for a p99 worth quoting: {samples} "
                "(raise --cohorts / --cohort-size or --repeat)",
            }
        )
    return checks


def render(document: dict[str, Any], harness: Harness) -> str:
    lines = [harness.header("Alert engine benchmark", document["config"]["repeat"]), ""]
    throughput = document.get("throughput")
    if throughput:
        rows = []
        for entry in throughput:
            m = entry["median"]
            rows.append(
                [
                    f"concurrency {entry['concurrency']}",
                    fmt(m["messages_per_second"], 0),
                    fmt(m["readings_per_second"], 0),
                    fmt(m["seconds"]),
                    fmt(m["cpu_percent.celery"], 0),
                    fmt(m["cpu_percent.mariadbd"], 0),
                    fmt(m["cpu_percent.redis-server"], 0),
                    fmt(m["machine_busy_percent"], 0),
                    fmt(m["others_percent"], 0),
                    f"{m['alerts_fired'] or 0:g}/{m['task_failures_total'] or 0:g}",
                ]
            )
        config = document["config"]
        lines += [
            f"(a) Evaluation throughput: one worker, backlog of {config['messages']:,} messages × "
            f"6 readings for {config['patients']} patients, tasks of {config['task_batch']} ids",
            "",
            table(
                [
                    "worker",
                    "msg/s",
                    "readings/s",
                    "seconds",
                    "celery%",
                    "mariadb%",
                    "redis%",
                    "machine%",
                    "others%",
                    "fired/failed",
                ],
                rows,
            ),
            "",
            "Timed from the first task sent to the last message marked evaluated (after one",
            "warm-up task); CPU in % of one core over that window (celery = worker and pool).",
            "",
        ]
    latency = document.get("latency")
    if latency:
        m = latency["median"]
        cfg = document["config"]
        rows = [
            [
                "ingestion 201 → 'fired' on ward group",
                *(fmt(m[f"fired_latency_ms.{p}"], 0) for p in ("p50", "p95", "p99", "max")),
                f"{m['fired_latency_ms.count'] or 0:g}",
            ],
            [
                "  201 → evaluation task started",
                fmt(m["queue_wait_ms.p50"], 0),
                "",
                fmt(m["queue_wait_ms.p99"], 0),
                "",
                "",
            ],
            [
                "  task started → event received",
                fmt(m["evaluate_to_event_ms.p50"], 0),
                "",
                fmt(m["evaluate_to_event_ms.p99"], 0),
                "",
                "",
            ],
            [
                "firing reading sent (observed_at) → 'fired'",
                fmt(m["reading_to_fired_ms.p50"], 0),
                "",
                fmt(m["reading_to_fired_ms.p99"], 0),
                "",
                "",
            ],
            [
                "evaluation lag (evaluated_at − received_at)",
                *(fmt(m[f"evaluation_lag_ms.{p}"], 0) for p in ("p50", "p95", "p99", "max")),
                "all msgs",
            ],
            [
                "  received_at → 201 (server queue, commit)",
                fmt(m["evaluation_lag_received_to_201_ms.p50"], 0),
                "",
                fmt(m["evaluation_lag_received_to_201_ms.p99"], 0),
                "",
                "",
            ],
            [
                "  201 → evaluated_at (tick, broker, worker)",
                fmt(m["evaluation_lag_201_to_evaluated_ms.p50"], 0),
                "",
                fmt(m["evaluation_lag_201_to_evaluated_ms.p99"], 0),
                "",
                "",
            ],
        ]
        cpu_rows = [
            [
                f"{cfg['devices']} devices × 1 Hz",
                *(
                    fmt(m[f"ingestion.cpu_percent.{name}"], 0)
                    for name in ("daphne", "celery", "mariadbd", "loadgen")
                ),
                fmt(m["ingestion.machine_busy_percent"], 0),
                fmt(m["ingestion.others_percent"], 0),
            ]
        ]
        lines += [
            f"(b) Alert latency under load: {cfg['devices']} devices × 1 Hz × 6 readings for "
            f"{cfg['duration']:g} s; {cfg['cohorts']} cohorts × {cfg['cohort_size']} devices "
            f"drop to SpO2 {cfg['spo2']:g} % (rule: < 90 % for 10 s)",
            "",
            table(["ms", "p50", "p95", "p99", "max", "samples"], rows),
            "",
            "From the 201 of the message whose reading completed the 10 s sustain (the alert's",
            "fired_at = that reading's observed_at) to the event on the ward's channel-layer",
            "group.",
            "evaluated_at is when the evaluation task started (its 'now'), not when it committed.",
            "",
            table(
                CPU_HEADERS,
                cpu_rows,
            ),
            "",
            "Ingestion meanwhile (first run): " + latency["runs"][0]["ingestion_line"],
            f"Missing firings (a desaturation with no 'fired' event): {m['missing_firings']:g}",
            "",
        ]
    lines.append("Targets:")
    for check in document["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[check["passed"]]
        lines.append(f"  {verdict}  {check['text']}")
    lines += [f"Note: {note}" for note in harness.notes]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        harness = harness_open(
            stack, name="alerts", database_url=args.database_url, redis_url=args.redis_url
        )
        document: dict[str, Any] = {
            "benchmark": "alerts",
            "started_at": harness.started_at.isoformat(timespec="seconds"),
            "machine": harness.machine(),
            "config": {
                key: value
                for key, value in vars(args).items()
                if key not in {"part_set"} and not callable(value)
            },
        }
        document["config"]["parts"] = sorted(args.part_set)
        if "throughput" in args.part_set:
            document["throughput"] = []
            say(f"storing the backlog: {args.messages:,} messages × 6 readings")
            started = time.monotonic()
            pks = backlog_store(patients=args.patients, messages=args.messages)
            document["backlog_store_seconds"] = time.monotonic() - started
            say(f"  stored in {document['backlog_store_seconds']:.1f} s")
            fresh = True
            for concurrency in args.concurrency:
                runs = []
                for repeat in range(args.repeat):
                    say(
                        f"throughput, worker concurrency {concurrency} "
                        f"(run {repeat + 1}/{args.repeat})"
                    )
                    run = throughput_run(
                        harness,
                        args,
                        pks=pks,
                        fresh=fresh,
                        concurrency=concurrency,
                        repeat=repeat,
                    )
                    fresh = False
                    say(
                        f"  {run['messages_per_second']:,.0f} msg/s, "
                        f"{run['readings_per_second']:,.0f} readings/s, celery "
                        f"{fmt(run['cpu_percent']['celery'], 0)}%"
                    )
                    runs.append(run)
                document["throughput"].append(
                    {
                        "concurrency": concurrency,
                        "runs": runs,
                        "median": median_of(runs, THROUGHPUT_FIGURES),
                    }
                )
        if "latency" in args.part_set:
            runs = []
            for repeat in range(args.repeat):
                say(
                    f"latency, {args.devices} devices for {args.duration:g} s "
                    f"(run {repeat + 1}/{args.repeat})"
                )
                run = latency_run(harness, args, repeat=repeat)
                say(
                    f"  fired p50/p99 {fmt(run['fired_latency_ms']['p50'], 0)}/"
                    f"{fmt(run['fired_latency_ms']['p99'], 0)} ms over "
                    f"{run['fired_latency_ms']['count']} firings, {run['missing_firings']} missing"
                )
                runs.append(run)
            document["latency"] = {"runs": runs, "median": median_of(runs, LATENCY_FIGURES)}
        document["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        document["notes"] = harness.notes
        document["targets"] = targets_check(document)
        results_report(f"alerts-{harness.stamp}", document, render(document, harness))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())
