"""``bin/bench api``: the records API's heavy reads, through daphne, with their query plans.

1. Data: the readings tables are emptied, then ``manage.py generate_observations`` stores
   ``--hours`` (24) of 1 Hz readings of six vitals for one patient (518,400 rows) and
   ``--ward-minutes`` (5) for every bed of that patient's 36-bed ward.
2. Timings, one request at a time on a keep-alive connection with an API token
   (``patients.api_access.api_token_issue``, scope read): the trend endpoint over the whole
   range in ``--bucket`` (60 s) buckets, for one vital and for all; the ward's latest vitals
   (the endpoint if the records API has one, else ``monitoring.selectors.latest_vitals`` for
   the ward's patients timed in this process, and the output says so); the dashboard's ward
   snapshot, in this process, for comparison.
3. Plans: the SQL each case runs (captured in this process: the endpoints through Django's
   test client, the selectors called directly) that reads ``monitoring_observation`` is
   explained (``EXPLAIN FORMAT=JSON``) and analysed (``ANALYZE FORMAT=JSON``, which runs it);
   both are saved in the result file and the key facts printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from bench.api_plans import plan_facts_text, plans_capture
from bench.common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    PYTHON,
    REPO,
    BenchError,
    bench_main,
    fmt,
    results_report,
    say,
    table,
)
from bench.harness import Harness, harness_open, latency
from bench.http11 import EXCHANGE_ERRORS, Connection
from bench.processes import daphne_start, free_port

TARGET_TREND_MS = 200.0
TARGET_LATEST_MS = 50.0
# The bench's own token makes hundreds of requests a minute; the per-credential throttle
# (600/min by default) is not what is measured.
SERVER_ENV = {"API_THROTTLE_RATE": "1000000/min"}
TREND_PATH = "/api/v1/observations/trend/"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/bench api",
        description="Benchmark the records API's trend and ward latest vitals, with plans.",
        epilog="Run it alone on the machine, three times (--repeat 3), and quote the medians.",
    )
    add = parser.add_argument
    add("--hours", type=float, help="hours of 1 Hz readings for the trend patient (default 24)")
    add("--bucket", type=int, default=60, help="trend bucket width in seconds")
    add("--ward-minutes", type=float, help="minutes of 1 Hz readings per bed (default 5)")
    add("--requests", type=int, help="timed requests per case (default 100)")
    add("--case-seconds", type=float, default=60.0, help="time bound per case (at least 10 done)")
    add("--warmup-requests", type=int, default=3, help="untimed requests first, per case")
    add(
        "--latest-vitals-path",
        help="the ward latest-vitals endpoint, '{ward}' for the code (default: found in the "
        "records API's routes; without one the selector is timed in-process)",
    )
    add(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="skip ANALYZE TABLE after loading the data (plans with stale statistics)",
    )
    add("--quick", action="store_true", help="smoke test: 2 hours of data, 10 requests")
    add("--repeat", type=int, default=1, help="runs of the timings; the table shows medians")
    add("--database-url", default=DEFAULT_DATABASE_URL)
    add("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    q = args.quick
    args.hours = args.hours or (2.0 if q else 24.0)
    args.ward_minutes = args.ward_minutes or (2.0 if q else 5.0)
    args.requests = args.requests or (10 if q else 100)
    if not 0 < args.hours <= 24 * 31 or not 0 < args.ward_minutes <= 24 * 60:
        parser.error("--hours 0..744, --ward-minutes 0..1440")
    if not 1 <= args.bucket <= 86400 or not 1 <= args.requests <= 100_000:
        parser.error("--bucket 1..86400 s, --requests 1..100000")
    if not 1 <= args.repeat <= 20 or not 1 <= args.case_seconds <= 3600:
        parser.error("--repeat 1..20, --case-seconds 1..3600")
    return args


# --- data -----------------------------------------------------------------------------------


def _generate(harness: Harness, arguments: list[str]) -> str:
    completed = subprocess.run(  # noqa: S603 - argv built here, no shell
        [PYTHON, "manage.py", "generate_observations", *arguments],
        cwd=REPO,
        env=harness.env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if completed.returncode != 0:
        raise BenchError(f"generate_observations failed:\n{completed.stdout}{completed.stderr}")
    return completed.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def _phase(what: str, log: dict[str, Any]) -> Any:
    say(what)
    started = time.monotonic()
    yield
    log[what] = round(time.monotonic() - started, 1)


def data_prepare(harness: Harness, args: argparse.Namespace, end: dt.datetime) -> dict[str, Any]:
    from django.db import connection

    from bench.hospital import BEDS_PER_WARD, bench_devices_ensure, bench_readings_clear
    from monitoring.models import Observation
    from patients.models import Admission

    devices = bench_devices_ensure(count=BEDS_PER_WARD)
    bed = devices[0].bed
    ward = bed.ward.code
    patient = Admission.objects.get(bed=bed, discharged_at__isnull=True).patient
    stamp = end.isoformat().replace("+00:00", "Z")
    common = ["--rate", "1", "--codes", "6", "--end", stamp]
    timings: dict[str, Any] = {}
    with _phase("emptying the readings tables", timings):
        bench_readings_clear()
    with _phase(f"generate_observations: {args.hours:g} h for {patient.mrn}", timings):
        trend_line = _generate(
            harness,
            ["--patient", patient.mrn, "--hours", f"{args.hours:g}", *common],
        )
    with _phase(f"generate_observations: {args.ward_minutes:g} min for ward {ward}", timings):
        ward_line = _generate(
            harness,
            ["--ward", ward, "--minutes", f"{args.ward_minutes:g}", *common],
        )
    say(f"  {trend_line}")
    say(f"  {ward_line}")
    if args.analyze:
        # InnoDB recomputes statistics in the background after large changes; right after a
        # bulk load they are stale, and latest_vitals lost its loose index scan to them (a
        # range scan of every index entry of the ward: 25× slower). A running portal's table
        # grows steadily, so settled statistics are what it sees; --no-analyze shows the other.
        with _phase("ANALYZE TABLE monitoring_observation", timings), connection.cursor() as c:
            c.execute(f"ANALYZE TABLE {connection.ops.quote_name(Observation._meta.db_table)}")
            c.fetchall()
    patient_ids = list(
        Admission.objects.filter(bed__ward__code=ward, discharged_at__isnull=True).values_list(
            "patient_id", flat=True
        )
    )
    return {
        "ward": ward,
        "patient_pk": patient.pk,
        "patient": str(patient.public_id),
        "mrn": patient.mrn,
        "patient_ids": patient_ids,
        "end": end,
        "generate": {"trend": trend_line, "ward": ward_line, "seconds": timings},
    }


def latest_vitals_path(args: argparse.Namespace, ward: str) -> str | None:
    """The ward latest-vitals endpoint: given, or found among the records API's routes."""
    if args.latest_vitals_path:
        return args.latest_vitals_path.replace("{ward}", ward)
    from django.urls import URLPattern

    from config import api_urls

    for pattern in api_urls.urlpatterns:
        if not isinstance(pattern, URLPattern):
            continue
        route = str(pattern.pattern)
        if route.startswith("wards/<") and ("vitals" in route or "latest" in route):
            head, _, rest = route.partition("<")
            return "/api/v1/" + head + ward + rest.partition(">")[2]
    return None


# --- timing ---------------------------------------------------------------------------------


async def _http_cases(
    port: int, token: str, cases: list[tuple[str, str]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    connection = Connection("127.0.0.1", port)
    results = {}
    try:
        for name, path in cases:
            head = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Token {token}\r\nAccept: application/json\r\n\r\n"
            ).encode("latin-1")
            timings: list[float] = []
            statuses: dict[str, int] = {}
            size = 0
            deadline = time.monotonic() + args.case_seconds
            total = args.warmup_requests + args.requests
            for n in range(total):
                if n >= args.warmup_requests + 10 and time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(60):
                        response = await connection.request(head)
                except (TimeoutError, *EXCHANGE_ERRORS) as error:
                    connection.close()
                    status = type(error).__name__
                else:
                    status = str(response.status)
                    size = len(response.body)
                elapsed = 1000 * (time.perf_counter() - started)
                if n >= args.warmup_requests:
                    timings.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1
            results[name] = {
                "how": f"GET {path} through daphne",
                "latency_ms": latency(timings),
                "statuses": statuses,
                "bytes": size,
            }
    finally:
        connection.close()
    return results


def _in_process(call: Callable[[], Any], args: argparse.Namespace, how: str) -> dict[str, Any]:
    from django.db import connection

    timings: list[float] = []
    deadline = time.monotonic() + args.case_seconds
    for n in range(args.warmup_requests + args.requests):
        if n >= args.warmup_requests + 10 and time.monotonic() > deadline:
            break
        started = time.perf_counter()
        call()
        elapsed = 1000 * (time.perf_counter() - started)
        if n >= args.warmup_requests:
            timings.append(elapsed)
    connection.close()
    return {"how": how, "latency_ms": latency(timings), "statuses": {"in-process": len(timings)}}


def cases_run(
    harness: Harness, args: argparse.Namespace, data: dict[str, Any], token: str
) -> dict[str, Any]:
    from monitoring.selectors import latest_vitals
    from monitoring.vitals import SPO2
    from portal.snapshot import ward_snapshot

    end = data["end"]
    query = {
        "patient": data["patient"],
        "from": (end - dt.timedelta(hours=args.hours)).isoformat().replace("+00:00", "Z"),
        "to": end.isoformat().replace("+00:00", "Z"),
        "bucket": args.bucket,
    }
    cases = [
        ("trend, one vital", f"{TREND_PATH}?{urlencode({**query, 'code': SPO2.code})}"),
        ("trend, all vitals", f"{TREND_PATH}?{urlencode(query)}"),
    ]
    latest_path = latest_vitals_path(args, data["ward"])
    if latest_path:
        cases.append(("ward latest vitals", latest_path))
    port = free_port()
    daphne = daphne_start(
        env={**harness.env, **SERVER_ENV},
        port=port,
        log_path=harness.log(f"daphne-{time.time():.0f}"),
        probe_path="/healthz",
        probe_status=200,
    )
    try:
        results = asyncio.run(_http_cases(port, token, cases, args))
    finally:
        daphne.stop()
    patient_ids = data["patient_ids"]
    if not latest_path:
        results["ward latest vitals"] = _in_process(
            lambda: latest_vitals(patient_ids=patient_ids),
            args,
            f"monitoring.selectors.latest_vitals for the {len(patient_ids)} patients of "
            f"{data['ward']}, in-process (the records API has no such endpoint yet)",
        )
    results["ward snapshot (dashboard connect)"] = _in_process(
        lambda: ward_snapshot(ward_code=data["ward"]),
        args,
        f"portal.snapshot.ward_snapshot('{data['ward']}'), in-process: what every dashboard "
        "connect without a replay costs",
    )
    return results


# --- report ---------------------------------------------------------------------------------

CASE_TARGETS = {
    "trend, one vital": TARGET_TREND_MS,
    "trend, all vitals": TARGET_TREND_MS,
    "ward latest vitals": TARGET_LATEST_MS,
}


def median_cases(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in runs[0]:
        entries = [run[name] for run in runs if name in run]
        merged[name] = {
            "how": entries[0]["how"],
            "latency_ms": {
                key: statistics.median(e["latency_ms"][key] for e in entries)
                if all(e["latency_ms"][key] is not None for e in entries)
                else None
                for key in ("count", "p50", "p95", "p99", "max")
            },
            "statuses": entries[0]["statuses"],
            "bytes": entries[0].get("bytes"),
        }
    return merged


def targets_check(median: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for name, target in CASE_TARGETS.items():
        case = median.get(name)
        if case is None:
            checks.append({"passed": None, "text": f"{name}: not run"})
            continue
        p99 = case["latency_ms"]["p99"]
        ok = set(case["statuses"]) <= {"200", "in-process"}
        text = f"{name}: p99 {fmt(p99)} ms < {target:g} ms" + ("" if ok else " (errors)")
        if "in-process" in case["statuses"]:
            text += " [in-process selector, no HTTP: no endpoint yet]"
        checks.append({"passed": p99 is not None and p99 < target and ok, "text": text})
    return checks


def render(document: dict[str, Any], harness: Harness) -> str:
    rows = []
    for name, case in document["median"].items():
        lat = case["latency_ms"]
        statuses = " ".join(f"{k}:{v}" for k, v in case["statuses"].items())
        rows.append(
            [
                name,
                fmt(lat["count"], 0),
                fmt(lat["p50"]),
                fmt(lat["p95"]),
                fmt(lat["p99"]),
                fmt(lat["max"]),
                f"{case['bytes']:,}" if case.get("bytes") else "–",
                statuses,
            ]
        )
    data = document["data"]
    lines = [
        harness.header("Records API benchmark", document["config"]["repeat"]),
        "",
        f"Trend patient {data['mrn']}: {document['config']['hours']:g} h of 1 Hz × 6 vitals; ward "
        f"{data['ward']}: {document['config']['ward_minutes']:g} min per bed; "
        f"monitoring_observation holds {data['table_rows']:,} rows "
        f"(the trend patient {data['patient_share']:.0f}%)",
        "",
        table(["ms", "n", "p50", "p95", "p99", "max", "bytes", "status"], rows),
        "",
        "One request at a time, keep-alive, API token (scope read); daphne ran with "
        + " ".join(f"{k}={v}" for k, v in SERVER_ENV.items())
        + ". Table statistics: "
        + ("ANALYZE TABLE after loading." if document["config"]["analyze"] else "as loaded."),
    ]
    lines += [f"{name}: {case['how']}" for name, case in document["median"].items()]
    lines += ["", "Query plans (MariaDB EXPLAIN / ANALYZE FORMAT=JSON; all in the JSON file):"]
    lines += plan_facts_text(document["plans"])
    lines += ["", "Targets:"]
    for check in document["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[check["passed"]]
        lines.append(f"  {verdict}  {check['text']}")
    lines += [f"Note: {note}" for note in harness.notes]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        harness = harness_open(
            stack, name="api", database_url=args.database_url, redis_url=args.redis_url
        )
        from django.utils import timezone

        from bench.hospital import bench_clinicians_ensure
        from monitoring.models import Observation
        from patients.api_access import api_token_issue, api_token_revoke

        end = timezone.now().replace(second=0, microsecond=0)
        data = data_prepare(harness, args, end)
        total = Observation.objects.count()
        patient_rows = Observation.objects.filter(patient_id=data["patient_pk"]).count()
        data.update(table_rows=total, patient_share=100 * patient_rows / total if total else 0)
        if data["patient_share"] > 10:
            harness.notes.append(
                f"the trend patient holds {data['patient_share']:.0f}% of monitoring_observation;"
                " in a hospital one patient is a fraction of a percent, and MariaDB may choose"
                " another plan there (see bench/README.md)."
            )
        (clinician,) = bench_clinicians_ensure(users=1)
        api_token, plain = api_token_issue(user=clinician, name="bin/bench api", scopes=["read"])
        stack.callback(api_token_revoke, token=api_token)
        runs = []
        for repeat in range(args.repeat):
            say(f"timing the cases (run {repeat + 1}/{args.repeat})")
            runs.append(cases_run(harness, args, data, plain))
        say("capturing and explaining the queries")
        plans = plans_capture(args, data, plain, latest_path=latest_vitals_path(args, data["ward"]))
        median = median_cases(runs)
        document = {
            "benchmark": "api",
            "started_at": harness.started_at.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": harness.machine(),
            "config": {k: v for k, v in vars(args).items() if not callable(v)},
            "server_env": SERVER_ENV,
            "data": {k: v for k, v in data.items() if k not in ("patient_ids", "end")}
            | {"end": data["end"].isoformat()},
            "runs": runs,
            "median": median,
            "plans": plans,
            "notes": harness.notes,
        }
        document["targets"] = targets_check(median)
        results_report(f"api-{harness.stamp}", document, render(document, harness))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())
