"""``bin/bench fanout``: ward dashboards over WebSockets under the 300-device ingestion load.

For each step (100, 1,000, then up by ``--step`` to ``--max-clients`` while the machine holds):
N logged-in dashboards spread over the bench wards (bench.wsclients, a lean RFC 6455 client,
bench.ws), a fresh daphne, the paced devices posting throughout. Measured: the latency from a
reading's ingestion to its vitals frame at each client, frames per second delivered, daphne's
memory per connection, and a reconnect storm (everyone drops and reconnects with ``last_seq``
within ``--storm-window`` seconds). bench/fanout_run.py runs one step; this module the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import statistics
from collections.abc import Sequence
from typing import Any

from bench.common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    BenchError,
    bench_main,
    fmt,
    results_report,
    say,
    table,
)
from bench.fanout_run import Setup, fanout_run, step_limit
from bench.harness import Harness, device_tokens_file, harness_open, open_files_raise
from bench.processes import celery_start

TARGET_CLIENTS = 1000
TARGET_P99_MS = 500.0
DAPHNE_CEILING_PERCENT = 95.0
OPEN_FILES_MARGIN = 1000  # ingestion connections, MariaDB, Redis, logs


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 100,1000")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/bench fanout",
        description="Benchmark ward dashboards (WebSockets through daphne) under ingestion load.",
        epilog="Run it alone on the machine, three times (--repeat 3), and quote the medians.",
    )
    add = parser.add_argument
    add("--clients", type=_int_list, help="fixed steps (default 100,1000)")
    add("--step", type=int, default=1000, help="then step up by this many clients")
    add("--max-clients", type=int, help="up to this many (default 3000)")
    add("--devices", type=int, help="paced devices at 1 Hz meanwhile (default 300)")
    add("--measure", type=float, help="measured seconds per step (default 30)")
    add("--warmup", type=float, help="seconds of load before anything (default 2)")
    add("--storm-window", type=float, help="reconnects spread over this (default 10 s; 0: none)")
    add("--settle", type=float, help="seconds after the storm window before closing (default 10)")
    add(
        "--storms",
        type=int,
        default=1,
        help="reconnect storms one after the other, each window + settle (default 1)",
    )
    add(
        "--in-flight",
        type=int,
        default=8,
        help="handshakes (with their snapshot) in progress at once while ramping up",
    )
    add(
        "--connect-rate-floor",
        type=float,
        default=5.0,
        help="the ramp may take 30 s + clients / this many seconds before the window starts",
    )
    add("--handshake-timeout", type=float, default=10.0, help="seconds for 101 (and catch-up)")
    add("--ack-interval", type=float, default=2.0, help="seconds between a client's acks")
    add("--samples-per-frame", type=int, default=4, help="readings timed per frame received")
    add("--users", type=int, default=10, help="bench clinicians the sessions belong to")
    add(
        "--daphne-backlog",
        type=int,
        help="daphne's listen backlog (default: Twisted's 50), through an endpoint string",
    )
    add(
        "--dashboard-daphne",
        action="store_true",
        help="production's layout: devices on uvicorn serving config.asgi:ingest_application, "
        "dashboards on a daphne",
    )
    add("--client-procs", type=int, help="client processes (default: one per 1,000 clients)")
    add(
        "--profile",
        action="store_true",
        help=f"py-spy the daphne holding the sockets during the {TARGET_CLIENTS} step",
    )
    add(
        "--profile-ramp",
        action="store_true",
        help=f"py-spy daphne for the first 16 s of the {TARGET_CLIENTS} dashboards connecting",
    )
    add(
        "--profile-storm",
        action="store_true",
        help=f"py-spy daphne during the first reconnect storm of {TARGET_CLIENTS}",
    )
    add("--no-step-up", action="store_true", help="stop after the fixed steps")
    add("--quick", action="store_true", help="smoke test: 20 and 50 clients, short windows")
    add("--repeat", type=int, default=1, help="runs per step; the table shows medians")
    add("--database-url", default=DEFAULT_DATABASE_URL)
    add("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    q = args.quick
    args.clients = args.clients or ([20, 50] if q else [100, TARGET_CLIENTS])
    args.max_clients = args.max_clients or (50 if q else 3000)
    args.devices = args.devices or (60 if q else 300)
    args.measure = args.measure or (8.0 if q else 30.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 2.0)
    args.storm_window = args.storm_window if args.storm_window is not None else (4.0 if q else 10.0)
    args.settle = args.settle if args.settle is not None else (4.0 if q else 10.0)
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat is between 1 and 20")
    if not 1 <= args.max_clients <= 20_000 or max(args.clients) > args.max_clients:
        parser.error("--max-clients 1..20000, and at least the largest of --clients")
    if not 36 <= args.devices <= 5000 or not 5 <= args.measure <= 3600:
        parser.error("--devices 36..5000, --measure 5..3600 s")
    if not 1 <= args.in_flight <= 1000 or not 0.5 <= args.connect_rate_floor <= 5000:
        parser.error("--in-flight 1..1000, --connect-rate-floor 0.5..5000")
    if not 1 <= args.samples_per_frame <= 200:
        parser.error("--samples-per-frame 1..200")
    args.connect_budget_base = 30.0
    if not 1 <= args.storms <= 30 or (args.storms > 1 and args.storm_window == 0):
        parser.error("--storms 1..30, and more than one needs a --storm-window")
    if args.measure + args.storms * (args.storm_window + args.settle) > 3000:
        # The clients' own bound on a run is an hour past the ramp (bench/wsclients.py).
        parser.error("--measure + --storms × (--storm-window + --settle) is at most 3000 s")
    if not 0.2 <= args.ack_interval <= 30 or args.storm_window < 0 or args.settle < 0:
        parser.error("--ack-interval 0.2..30 s; --storm-window and --settle at least 0")
    if args.client_procs is not None and not 1 <= args.client_procs <= 16:
        parser.error("--client-procs 1..16")
    if args.daphne_backlog is not None and not 1 <= args.daphne_backlog <= 65535:
        parser.error("--daphne-backlog 1..65535")
    return args


def steps_plan(args: argparse.Namespace) -> list[int]:
    steps = sorted(set(args.clients))
    if not args.no_step_up:
        n = steps[-1] + args.step
        while n <= args.max_clients:
            steps.append(n)
            n += args.step
        if steps[-1] < args.max_clients and not args.quick:
            steps.append(args.max_clients)
    return steps


# --- report ---------------------------------------------------------------------------------

FIGURES = (
    "connected_initial",
    "ramp_seconds",
    "connects_per_second",
    "reading_latency_ms.p50",
    "reading_latency_ms.p95",
    "reading_latency_ms.p99",
    "commit_to_publish_ms.p50",
    "commit_to_publish_ms.p99",
    "publish_to_client_ms.p50",
    "publish_to_client_ms.p99",
    "frames_per_second",
    "megabytes_per_second",
    "delivered_percent",
    "rss_per_connection_kib",
    "phases.initial.handshake_ms.p99",
    "phases.initial.catch_up_ms.p99",
    "phases.initial.failed_handshakes",
    "phases.storm.failed_handshakes",
    "phases.storm.non_101",
    "phases.storm.gave_up",
    "phases.storm.catch_up_ms.p50",
    "phases.storm.catch_up_ms.p99",
    "phases.storm.catch_up.replay",
    "phases.storm.catch_up.snapshot",
    "abnormal_closes.steady",
    "abnormal_closes.storm",
    "gaps_at_end",
    "cpu_percent.daphne",
    "cpu_percent.daphne-ws",
    "cpu_percent.celery",
    "cpu_percent.mariadbd",
    "cpu_percent.redis-server",
    "cpu_percent.loadgen",
    "cpu_percent.clients",
    "client_process_max_percent",
    "machine_busy_percent",
    "others_percent",
    "ingestion.latency_from_intended_ms.p99",
    "ingestion.error_count",
)


def _dig(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged = {}
    for path in FIGURES:
        values = [_dig(run, path) for run in runs]
        numbers = [v for v in values if isinstance(v, int | float)]
        # A count absent from a run (no snapshot in the storm) is a zero there.
        if path.startswith("phases.storm.catch_up."):
            numbers = [v or 0 for v in values]
        merged[path] = statistics.median(numbers) if numbers else None
    return merged


def targets_check(document: dict[str, Any]) -> list[dict[str, Any]]:
    by_clients = {step["clients"]: step for step in document["steps"]}
    checks = []
    target = by_clients.get(TARGET_CLIENTS)
    if target is None:
        checks.append({"passed": None, "text": f"{TARGET_CLIENTS} clients: not run"})
        checks.append({"passed": None, "text": "reconnect storm: not run"})
        return checks
    m = target["median"]
    p99 = m["reading_latency_ms.p99"]
    checks.append(
        {
            "passed": p99 is not None
            and p99 < TARGET_P99_MS
            and m["connected_initial"] == TARGET_CLIENTS,
            "text": f"{TARGET_CLIENTS} clients: reading ingested → on screen p99 {fmt(p99, 0)} ms "
            f"< {TARGET_P99_MS:g} ms (publish → client p99 "
            f"{fmt(m['publish_to_client_ms.p99'], 0)} ms), {m['connected_initial']:g} connected",
        }
    )
    if document["config"]["storm_window"] > 0:
        failures = []
        for run in target["runs"]:
            storm = run["phases"]["storm"]
            bad_catch_up = sum(
                n for kind, n in storm["catch_up"].items() if kind not in ("replay", "snapshot")
            )
            failures.append(
                storm["failed_handshakes"]
                + storm["gave_up"]
                + run["abnormal_closes"]["storm"]
                + bad_catch_up
            )
        checks.append(
            {
                "passed": max(failures) == 0,
                "text": f"reconnect storm of {TARGET_CLIENTS} within "
                f"{document['config']['storm_window']:g} s: zero failures "
                f"(failed handshakes + abnormal closes + missing catch-up, worst run: "
                f"{max(failures)})",
            }
        )
    return checks


def _evaluated_line(steps_runs: Any) -> str:
    """Whether the alert engine evaluated every stored message once its queue drained."""
    runs = [run for runs in steps_runs for run in runs]
    verifications = [run["ingestion"]["verification"] for run in runs]
    short = [v for v in verifications if v["evaluated_messages"] < v["stored_messages"]]
    drains = [run.get("evaluation_drain_seconds") for run in runs]
    drained = (
        "the queue did not drain within the bound in some run"
        if any(d is None for d in drains)
        else f"queue drained within {max(drains):.1f} s of the load's end"
    )
    if not short:
        return f"Evaluation: every stored message evaluated in all {len(runs)} run(s) ({drained})."
    worst = min(short, key=lambda v: v["evaluated_messages"] - v["stored_messages"])
    return (
        f"Evaluation: NOT every stored message evaluated in {len(short)} of {len(runs)} run(s), "
        f"worst {worst['evaluated_messages']:,} of {worst['stored_messages']:,} ({drained})."
    )


def render(document: dict[str, Any], harness: Harness) -> str:
    cfg = document["config"]
    rows, storm_rows, cpu_rows = [], [], []
    for step in document["steps"]:
        m = step["median"]
        name = f"{step['clients']:,}"
        rows.append(
            [
                name,
                fmt(m["connected_initial"], 0),
                fmt(m["reading_latency_ms.p50"], 0),
                fmt(m["reading_latency_ms.p95"], 0),
                fmt(m["reading_latency_ms.p99"], 0),
                f"{fmt(m['commit_to_publish_ms.p50'], 0)}/{fmt(m['commit_to_publish_ms.p99'], 0)}",
                f"{fmt(m['publish_to_client_ms.p50'], 0)}/{fmt(m['publish_to_client_ms.p99'], 0)}",
                fmt(m["frames_per_second"], 0),
                fmt(m["megabytes_per_second"]),
                fmt(m["delivered_percent"]),
                fmt(m["rss_per_connection_kib"], 0),
                fmt(m["phases.initial.handshake_ms.p99"], 0),
                fmt(m["connects_per_second"]),
            ]
        )
        storm_rows.append(
            [
                name,
                fmt(m["phases.storm.failed_handshakes"], 0),
                fmt(m["phases.storm.non_101"], 0),
                fmt(m["phases.storm.gave_up"], 0),
                f"{fmt(m['abnormal_closes.steady'], 0)}/{fmt(m['abnormal_closes.storm'], 0)}",
                fmt(m["phases.storm.catch_up.replay"], 0),
                fmt(m["phases.storm.catch_up.snapshot"], 0),
                f"{fmt(m['phases.storm.catch_up_ms.p50'], 0)}/"
                f"{fmt(m['phases.storm.catch_up_ms.p99'], 0)}",
                fmt(m["gaps_at_end"], 0),
            ]
        )
        cpu_rows.append(
            [
                name,
                *(
                    fmt(m[f"cpu_percent.{label}"], 0)
                    for label in (
                        "daphne",
                        "daphne-ws",
                        "celery",
                        "mariadbd",
                        "redis-server",
                        "loadgen",
                    )
                ),
                f"{fmt(m['cpu_percent.clients'], 0)} ({fmt(m['client_process_max_percent'], 0)})",
                fmt(m["machine_busy_percent"], 0),
                fmt(m["others_percent"], 0),
            ]
        )
    first = document["steps"][0]["runs"][0]
    lines = [
        harness.header("Dashboard fan-out benchmark", cfg["repeat"]),
        "",
        f"{cfg['devices']} devices × 1 Hz × 6 readings meanwhile; clients spread over "
        f"{len(document['wards'])} wards; {cfg['measure']:g} s measured per step",
        "",
        table(
            [
                "clients",
                "connected",
                "p50",
                "p95",
                "p99",
                "→publish p50/p99",
                "→client p50/p99",
                "frames/s",
                "MiB/s",
                "deliv%",
                "KiB/conn",
                "hs p99",
                "conn/s",
            ],
            rows,
        ),
        "",
        "p50/p95/p99: ms from the 201 of the message carrying a reading to a client receiving",
        "the vitals frame with it; split into →publish (201 → frame on the ward's channel-layer",
        "group: the 0.25 s coalescing tick) and →client (publish → each client: daphne's fan-out).",
        "deliv%: frames received / frames published × clients of the ward. KiB/conn: RSS growth",
        "of the daphne holding the sockets over the connect ramp, per connection. hs: handshake",
        f"(101) time while ramping up ({cfg['in_flight']} connects with their snapshot in",
        "flight); conn/s: ramp rate.",
        "",
        table(
            [
                "storm",
                "failed hs",
                "non-101",
                "gave up",
                "abnormal closes",
                "replay",
                "snapshot",
                "catch-up p50/p99 ms",
                "gaps",
            ],
            storm_rows,
        ),
        "",
        f"Every client drops its TCP connection at once and reconnects with last_seq at a random "
        f"moment of {cfg['storm_window']:g} s"
        + (
            f" ({cfg['storms']} storms, every {cfg['storm_window'] + cfg['settle']:g} s, "
            "counted together)"
            if cfg.get("storms", 1) > 1
            else ""
        )
        + f"; failed hs = attempts without a 101 within "
        f"{cfg['handshake_timeout']:g} s (timeouts, refusals, resets; each client retries twice),",
        "abnormal closes = steady/storm server closes or lost connections, catch-up = reconnect",
        "start to replay/snapshot, gaps = clients left with a hole in their sequence.",
        "",
        table(
            [
                "CPU, % of one core",
                "daphne",
                "daphne-ws",
                "celery",
                "mariadb",
                "redis",
                "loadgen",
                "clients (max proc)",
                "machine",
                "others",
            ],
            cpu_rows,
        ),
        "",
        "Over the measured window. A client process above ~85% means the clients may be the limit.",
        f"Open files: bench {document['open_files_limit'][0]}, daphne "
        f"{first['daphne_open_files_limit'][0]} (inherited); daphne's listen backlog: "
        + (
            f"{cfg['daphne_backlog']} (--daphne-backlog)."
            if cfg["daphne_backlog"]
            else "Twisted's default, 50."
        ),
        "Ingestion meanwhile (first step): " + first["ingestion_line"],
        _evaluated_line(step["runs"] for step in document["steps"]),
        *(
            [
                "RSS of the daphne holding the sockets after each storm, MiB (first run of each "
                "step): "
                + "; ".join(
                    f"{step['clients']:,}: "
                    + ", ".join(f"{v:g}" for v in step["runs"][0]["rss_after_each_storm_mib"])
                    for step in document["steps"]
                )
            ]
            if cfg.get("storms", 1) > 1
            else []
        ),
        f"Held: {document['held']:,} clients"
        + (
            f"; stopped at {document['stopped_at']:,}: {document['limit']}"
            if document["limit"]
            else ""
        ),
        "",
        "Targets:",
    ]
    for check in document["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[check["passed"]]
        lines.append(f"  {verdict}  {check['text']}")
    lines += [f"Note: {note}" for note in harness.notes]
    for step in document["steps"]:
        for run in step["runs"]:
            if run.get("profile", {}).get("text"):
                lines += [
                    "",
                    f"Profile of daphne, {step['clients']} clients:",
                    run["profile"]["text"],
                ]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    steps = steps_plan(args)
    limits = open_files_raise()
    if limits[0] < max(steps) + OPEN_FILES_MARGIN:
        raise BenchError(
            f"the open-files limit ({limits[0]}) cannot hold {max(steps)} clients: raise it"
        )
    with contextlib.ExitStack() as stack:
        harness = harness_open(
            stack, name="fanout", database_url=args.database_url, redis_url=args.redis_url
        )
        from django.conf import settings

        from bench.hospital import (
            bench_beds_by_device,
            bench_clinician_sessions,
            bench_sessions_end,
        )

        say(f"bench hospital: {args.devices} beds; {max(steps)} clinician sessions")
        devices, tokens_file = device_tokens_file(harness, count=args.devices)
        bed_device = bench_beds_by_device(devices=devices)
        sessions = bench_clinician_sessions(users=args.users, sessions=max(steps))
        stack.callback(bench_sessions_end, keys=sessions)
        wards = sorted({d.bed.ward.code for d in _with_wards(devices)})
        say("starting the Celery worker")
        celery = celery_start(env=harness.env, log_path=harness.log("celery"))
        stack.callback(celery.stop)
        setup = Setup(
            devices=devices,
            tokens_file=tokens_file,
            bed_device=bed_device,
            sessions=sessions,
            wards=wards,
            cookie_name=settings.SESSION_COOKIE_NAME,
            celery=celery,
        )
        document: dict[str, Any] = {
            "benchmark": "fanout",
            "started_at": harness.started_at.isoformat(timespec="seconds"),
            "machine": harness.machine(),
            "config": {k: v for k, v in vars(args).items() if not callable(v)},
            "wards": wards,
            "open_files_limit": list(limits),
            "steps": [],
        }
        held, limit, stopped_at = 0, None, None
        fixed = set(args.clients)
        for clients in steps:
            if limit is not None and clients not in fixed:
                break
            runs = []
            for repeat in range(args.repeat):
                say(f"{clients} clients (run {repeat + 1}/{args.repeat})")
                run = fanout_run(
                    harness,
                    setup,
                    args,
                    clients=clients,
                    repeat=repeat,
                    profile=args.profile and clients == TARGET_CLIENTS and repeat == 0,
                    profile_ramp=args.profile_ramp and clients == TARGET_CLIENTS and repeat == 0,
                    profile_storm=args.profile_storm and clients == TARGET_CLIENTS and repeat == 0,
                )
                runs.append(run)
                say(
                    f"  p50/p99 {fmt(run['reading_latency_ms']['p50'], 0)}/"
                    f"{fmt(run['reading_latency_ms']['p99'], 0)} ms, "
                    f"{run['frames_per_second']:,.0f} frames/s, daphne "
                    f"{fmt(run['cpu_percent'].get('daphne'), 0)}%, storm failures "
                    f"{run['phases']['storm']['failed_handshakes']}"
                )
            step = {"clients": clients, "runs": runs, "median": median_of(runs)}
            document["steps"].append(step)
            reasons = [step_limit(run, daphne_ceiling=DAPHNE_CEILING_PERCENT) for run in runs]
            reason = next((r for r in reasons if r), None)
            if reason is None:
                held = max(held, clients)
            elif limit is None:
                limit, stopped_at = reason, clients
                say(f"  limit: {reason}")
        document.update(held=held, limit=limit, stopped_at=stopped_at)
        document["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        document["notes"] = harness.notes
        document["targets"] = targets_check(document)
        results_report(f"fanout-{harness.stamp}", document, render(document, harness))
    return 0


def _with_wards(devices: list[Any]) -> list[Any]:
    from monitoring.models import Device

    return list(Device.objects.filter(pk__in=[d.pk for d in devices]).select_related("bed__ward"))


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())
