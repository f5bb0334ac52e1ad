"""``bin/bench ingest``: throughput and latency of ``POST /api/v1/ingest/`` (bench/README.md).

The harness owns the whole run: it starts MariaDB and Redis if they are down, prepares the bench
database and hospital, starts a Celery worker and, for every scenario run, a fresh daphne; the
load comes from ``bench.loadgen`` in separate processes. After each run it stops daphne (so
nothing is in flight), then checks in MariaDB that exactly the acknowledged readings are stored.
Everything it started is stopped at the end, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    LOG_DIR,
    BenchError,
    bench_main,
    local_endpoint,
    portal_env,
    results_report,
    say,
    utc_stamp,
)
from bench.ingest_report import TARGET_DEVICES, median_summary, render, run_line, targets_check
from bench.ingest_run import (
    BEDSIDE_READINGS,
    LIFTED_RATE_LIMIT,
    Context,
    Scenario,
    bedside_vitals,
    run_once,
)
from bench.processes import (
    celery_start,
    mariadb_ensure,
    redis_ensure,
    run_tool,
)

LOADGEN_SATURATED_PERCENT = 85.0  # of one core: above this the client, not the server, limits


# --- command line -------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 100,300")
    return values


def _server_env(items: Sequence[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise BenchError(f"--server-env takes NAME=VALUE, not {item!r}")
        env[name] = value
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/bench ingest",
        description="Benchmark POST /api/v1/ingest/: paced devices and batched throughput.",
        epilog="Run it alone on the machine, three times (--repeat 3), and quote the medians.",
    )
    add = parser.add_argument
    add("--scenarios", default="paced,batched", help="comma list of paced, batched")
    add("--devices", type=_int_list, help="paced: device counts (default 100,300,1000)")
    add("--duration", type=float, help="paced: measured seconds per run (default 60)")
    add("--rate", type=float, default=1.0, help="paced: messages per second per device")
    add("--batch-sizes", type=_int_list, help="batched: readings per message (default 1,100,1000)")
    add("--batch-duration", type=float, help="batched: measured seconds per size (default 20)")
    add(
        "--warmup",
        type=float,
        help="seconds of load before each measured window, left out of the figures (default 2)",
    )
    add("--connections", type=int, default=32, help="batched: concurrent connections")
    add(
        "--batch-devices",
        type=int,
        default=320,
        help="batched: devices the connections rotate over",
    )
    add("--quick", action="store_true", help="smoke test: ~5 s runs, 50 devices, batches of 1")
    add("--repeat", type=int, default=1, help="runs per scenario; the table shows medians")
    add(
        "--url",
        help="target a running server at http://127.0.0.1:PORT (no daphne or Celery started)",
    )
    add(
        "--server",
        choices=("daphne", "uvicorn"),
        default="daphne",
        help="the server of the ingestion application: daphne serving config.asgi:application "
        "(the demo's one process) or uvicorn serving config.asgi:ingest_application (compose's "
        "ingest listener)",
    )
    add(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="the bench database (name must contain 'bench')",
    )
    add("--redis-url", default=DEFAULT_REDIS_URL)
    add(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for daphne (repeatable), e.g. INGEST_WRITER_THREADS=8",
    )
    add("--loadgen-procs", type=int, default=1, help="load generator processes (if one saturates)")
    add(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds before a request counts as timed out",
    )
    add(
        "--keep-records",
        action="store_true",
        help="also save every request's times and status (results/*-records.json.gz)",
    )
    add(
        "--profile",
        nargs="?",
        const=f"paced-{TARGET_DEVICES}",
        metavar="SCENARIO",
        help="py-spy the daphne process during one run (default paced-300; e.g. batched-1000)",
    )
    args = parser.parse_args(argv)
    kinds = {kind.strip() for kind in args.scenarios.split(",") if kind.strip()}
    if not kinds or not kinds <= {"paced", "batched"}:
        parser.error("--scenarios takes paced, batched or both")
    args.kinds = kinds
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat is between 1 and 20")
    if not 1 <= args.loadgen_procs <= 16:
        parser.error("--loadgen-procs is between 1 and 16")
    if not 1 <= args.connections <= args.batch_devices:
        parser.error("--connections must be at least 1 and at most --batch-devices")
    for name in ("duration", "batch_duration"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= 3600:
            parser.error(f"--{name.replace('_', '-')} is between 1 and 3600 seconds")
    if args.warmup is not None and not 0 <= args.warmup <= 60:
        parser.error("--warmup is between 0 and 60 seconds")
    if not 0 < args.rate <= 100:
        parser.error("--rate is between 0 and 100 messages per second")
    if args.url and not args.url.startswith("http://"):
        parser.error("--url takes http://127.0.0.1:PORT (the load generator speaks plain HTTP)")
    if args.devices and max(args.devices) > 10_000:
        parser.error("--devices is at most 10000")
    return args


def scenarios_plan(args: argparse.Namespace) -> list[Scenario]:
    devices = args.devices or ([50] if args.quick else [100, 300, 1000])
    duration = args.duration or (5.0 if args.quick else 60.0)
    sizes = args.batch_sizes or ([1] if args.quick else [1, 100, 1000])
    batch_duration = args.batch_duration or (5.0 if args.quick else 20.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    readings = BEDSIDE_READINGS
    plan = []
    if "paced" in args.kinds:
        plan += [Scenario("paced", n, duration, readings, n, args.rate, warmup) for n in devices]
    if "batched" in args.kinds:
        plan += [
            Scenario(
                "batched", args.batch_devices, batch_duration, size, args.connections, 0.0, warmup
            )
            for size in sizes
        ]
    return plan


# --- main ---------------------------------------------------------------------------------


def _ingest_settings() -> dict[str, Any]:
    from django.conf import settings

    return {
        name: getattr(settings, name)
        for name in (
            "INGEST_WRITER_THREADS",
            "INGEST_RATE_PER_SECOND",
            "INGEST_BURST",
            "INGEST_MAX_PENDING",
        )
    }


def bench(args: argparse.Namespace) -> int:
    stamp = utc_stamp()
    started_at = dt.datetime.now(dt.UTC)
    plan = scenarios_plan(args)
    load_before = psutil.getloadavg()
    server_env = _server_env(args.server_env)
    env = portal_env(database_url=args.database_url, redis_url=args.redis_url, extra=server_env)
    # The harness's own Django (hospital, verification) and Celery client see what daphne sees.
    os.environ.clear()
    os.environ.update(env)
    target = local_endpoint(args.url, 80) if args.url else None
    database_port = local_endpoint(args.database_url, 3306)[1]
    redis_port = local_endpoint(args.redis_url, 6379)[1]
    profile_name = args.profile
    if profile_name and profile_name not in {s.name for s in plan}:
        paced = [s.name for s in plan if s.kind == "paced"]
        fallback = paced[0] if paced else plan[0].name
        say(f"--profile: {profile_name} is not in this run; profiling {fallback} instead")
        profile_name = fallback
    seconds = sum(s.warmup + s.duration + 12 for s in plan) * args.repeat
    say(
        f"{len(plan)} scenario(s) × {args.repeat} run(s): "
        + ", ".join(s.name for s in plan)
        + (f"; about {seconds / 60:.0f} min" if seconds >= 120 else f"; about {seconds:.0f} s")
    )
    notes = []
    if load_before[0] > 0.5:
        notes.append(
            f"the machine was not idle (load average {load_before[0]:.2f} before the run): "
            "treat the figures as indicative and rerun alone."
        )
    with contextlib.ExitStack() as stack:
        for name, ensure, url in (
            ("mariadbd", mariadb_ensure, args.database_url),
            ("redis-server", redis_ensure, args.redis_url),
        ):
            service = ensure(url, LOG_DIR / f"ingest-{stamp}-{name}.log")
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
        from bench.hospital import bench_device_tokens_issue, bench_devices_ensure

        needed = max(s.devices for s in plan)
        say(f"bench hospital: {needed} beds with an admitted patient and a device; issuing tokens")
        devices = bench_devices_ensure(count=needed)
        tokens = bench_device_tokens_issue(devices=devices)
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
        tokens_file = work_dir / "tokens.json"  # the directory is private (0700)
        tokens_file.write_text(json.dumps(tokens), encoding="utf-8")
        from config.celery import app as celery_app

        # Tasks a previous (interrupted, or --url) run left in the bench's broker database
        # would otherwise run during this one.
        stale = celery_app.control.purge()
        if stale:
            say(f"dropped {stale} stale Celery task(s) from {args.redis_url}")
        celery = None
        if target is None:
            say("starting the Celery worker")
            celery = celery_start(env=env, log_path=LOG_DIR / f"ingest-{stamp}-celery.log")
            stack.callback(celery.stop)
        else:
            notes.append(
                f"--url {args.url}: daphne and Celery are not the harness's; the server must use "
                f"{args.database_url}, and Celery's CPU is not measured."
            )
        ctx = Context(
            args=args,
            stamp=stamp,
            env=env,
            work_dir=work_dir,
            tokens_file=tokens_file,
            vitals=bedside_vitals(),
            celery=celery,
            target=target,
            database_port=database_port,
            redis_port=redis_port,
        )
        results = []
        for scenario in plan:
            runs = []
            for repeat in range(args.repeat):
                say(f"{scenario.label}, {scenario.duration:g} s (run {repeat + 1}/{args.repeat})")
                run = run_once(
                    ctx, scenario, repeat, profile=scenario.name == profile_name and repeat == 0
                )
                runs.append(run)
                say("  " + run_line(run))
                if run["loadgen_percent_per_process"] > LOADGEN_SATURATED_PERCENT:
                    note = (
                        f"{scenario.name}: a load generator process used "
                        f"{run['loadgen_percent_per_process']:.0f}% of a core; the client may be "
                        "the limit (try --loadgen-procs 2)."
                    )
                    say(note)
                    notes.append(note)
            results.append(
                {
                    "scenario": {
                        **scenario.__dict__,
                        "name": scenario.name,
                        "label": scenario.label,
                        "offered": scenario.offered,
                    },
                    "runs": runs,
                    "median": median_summary(runs),
                }
            )
        document = {
            "benchmark": "ingest",
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": psutil.cpu_count(),
                "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                "load_average_before": list(load_before),
            },
            "config": {
                "repeat": args.repeat,
                "quick": args.quick,
                "url": args.url,
                "database_url": args.database_url,
                "redis_url": args.redis_url,
                "server_env": server_env,
                "server": args.server,
                "batched_server_env": LIFTED_RATE_LIMIT,
                "ingest_settings": _ingest_settings(),
                "loadgen_procs": args.loadgen_procs,
                "request_timeout": args.request_timeout,
                "warmup_seconds": plan[0].warmup,
            },
            "notes": notes,
            "scenarios": results,
        }
        document["targets"] = targets_check(results)
        results_report(f"ingest-{stamp}", document, render(document))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())
