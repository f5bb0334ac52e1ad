"""The ingestion benchmark's report: medians over repeated runs, the targets, the tables."""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import fmt, table

# The targets the issue sets, printed beside the figures.
TARGET_DEVICES = 300
TARGET_P99_MS = 100.0
TARGET_BATCHED_READINGS_PER_SECOND = 20_000


def _merge(values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    if not present:
        return None
    if all(isinstance(value, bool) for value in present):
        return all(present)  # "verified" holds only if it held in every run
    if all(isinstance(value, int | float) for value in present):
        return statistics.median(present)
    if all(isinstance(value, dict) for value in present):
        keys = list(dict.fromkeys(key for value in present for key in value))
        return {key: _merge([value.get(key) for value in present]) for key in keys}
    return present[0]


def median_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (an error absent from a run counts as 0 there)."""
    kinds = list(dict.fromkeys(kind for run in runs for kind in run["errors"]))
    normalised = [
        {**run, "errors": {kind: run["errors"].get(kind, 0) for kind in kinds}} for run in runs
    ]
    merged = _merge([{k: v for k, v in run.items() if k != "profile"} for run in normalised])
    merged["runs"] = len(runs)
    merged["verified_runs"] = sum(1 for run in runs if run["verification"]["ok"])
    return merged


def errors_text(errors: dict[str, float]) -> str:
    shown = [f"{kind}:{count:g}" for kind, count in sorted(errors.items()) if count]
    return " ".join(shown) or "0"


def run_line(run: dict[str, Any]) -> str:
    """One run in one line, for the progress output."""
    latency, from_intended, cpu = (
        run["latency_ms"],
        run["latency_from_intended_ms"],
        run["cpu_percent"],
    )
    verified = "ok" if run["verification"]["ok"] else "FAIL"
    return (
        f"{run['requests_per_second']:,.1f} req/s, {run['readings_per_second']:,.0f} readings/s, "
        f"p99 {fmt(latency['p99'])} ms ({fmt(from_intended['p99'])} from intended), errors "
        f"{errors_text(run['errors'])}, stored=acked {verified}, CPU daphne "
        f"{fmt(cpu['daphne'], 0)}% loadgen {fmt(cpu['loadgen'], 0)}%"
    )


def _verified_text(summary: dict[str, Any]) -> str:
    runs, verified = summary["runs"], summary["verified_runs"]
    if verified == runs:
        return "ok" if runs == 1 else f"ok {runs}/{runs}"
    verification = summary["verification"]
    problems = []
    if verification["acknowledged_but_missing"]:
        problems.append(f"LOST {verification['acknowledged_but_missing']:g} msg")
    if verification["stored_but_not_acknowledged"]:
        problems.append(f"+{verification['stored_but_not_acknowledged']:g} unacked")
    if not problems:
        problems.append(
            f"rows {verification['stored_rows']:g} != {verification['acknowledged_readings']:g}"
        )
    return ("" if runs == 1 else f"{verified}/{runs} ok, ") + ", ".join(problems)


def targets_check(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {result["scenario"]["name"]: result for result in results}
    checks = []
    paced = by_name.get(f"paced-{TARGET_DEVICES}")
    if paced is not None and paced["scenario"]["rate"] == 1.0:
        median = paced["median"]
        p99 = median["latency_from_intended_ms"]["p99"]
        p99_actual = median["latency_ms"]["p99"]
        errors = median["error_count"]
        passed = (
            p99 is not None and p99 < TARGET_P99_MS and errors == 0 and median["verification"]["ok"]
        )
        text = (
            f"{TARGET_DEVICES} devices at 1 Hz: p99 {fmt(p99)} ms from intended send "
            f"({fmt(p99_actual)} ms from actual) < {TARGET_P99_MS:g} ms, errors {errors:g} == 0, "
            f"stored = acknowledged"
        )
        checks.append({"target": "paced", "passed": passed, "text": text})
    else:
        checks.append(
            {
                "target": "paced",
                "passed": None,
                "text": f"{TARGET_DEVICES} devices at 1 Hz: not run",
            }
        )
    batched = [r for r in results if r["scenario"]["kind"] == "batched"]
    if batched:
        best = max(batched, key=lambda r: r["median"]["readings_per_second"])
        rate = best["median"]["readings_per_second"]
        text = (
            f"batched: best {rate:,.0f} readings/s ({best['scenario']['name']}) "
            f">= {TARGET_BATCHED_READINGS_PER_SECOND:,}"
        )
        passed = rate >= TARGET_BATCHED_READINGS_PER_SECOND and best["median"]["verification"]["ok"]
        checks.append({"target": "batched", "passed": passed, "text": text})
    else:
        checks.append({"target": "batched", "passed": None, "text": "batched: not run"})
    return checks


def render(document: dict[str, Any]) -> str:
    results = document["scenarios"]
    rows = []
    cpu_rows = []
    celery_rows = []
    for result in results:
        s, m = result["scenario"], result["median"]
        lat, late, lag = m["latency_ms"], m["latency_from_intended_ms"], m["send_lag_ms"]
        rows.append(
            [
                s["label"],
                s["offered"],
                fmt(m["requests_per_second"]),
                fmt(m["readings_per_second"], 0),
                fmt(lat["p50"]),
                fmt(lat["p95"]),
                fmt(lat["p99"]),
                fmt(late["p50"]),
                fmt(late["p95"]),
                fmt(late["p99"]),
                fmt(lag["p99"]),
                _verified_text(m),
                errors_text(m["errors"]),
            ]
        )
        cpu = m["cpu_percent"]
        cpu_rows.append(
            [
                s["label"],
                *(
                    fmt(cpu.get(label), 0)
                    for label in ("daphne", "celery", "loadgen", "mariadbd", "redis-server")
                ),
                fmt(m["machine_busy_percent"], 0),
                fmt(m["others_percent"], 0),
            ]
        )
        celery, verification = m["celery"], m["verification"]
        failures = sum((celery.get("task_failures") or {}).values())
        celery_rows.append(
            [
                s["label"],
                fmt(celery["queued_at_end"], 0),
                fmt(celery["drain_seconds"]),
                f"{verification['evaluated_messages']:g}/{verification['stored_messages']:g}",
                f"{failures:g}",
            ]
        )
    repeat = document["config"]["repeat"]
    lines = [
        f"Ingestion benchmark {document['started_at']} ({document['machine']['cpus']} CPUs, "
        f"load average before {document['machine']['load_average_before'][0]:.2f})"
        + (f", medians of {repeat} runs" if repeat > 1 else ", single run"),
        "",
        table(
            [
                "scenario",
                "offered",
                "req/s",
                "readings/s",
                "p50",
                "p95",
                "p99",
                "p50*",
                "p95*",
                "p99*",
                "lag p99",
                "stored=acked",
                "errors",
            ],
            rows,
        ),
        "",
        "Latency in ms. p50/p95/p99: from the actual send; p50*/p95*/p99*: from the intended send",
        "time (coordinated-omission aware; equal to actual in the closed-loop batched runs); lag:",
        "how late sends left against their schedule. req/s counts 201s; errors by status.",
        f"Each run starts with {document['config']['warmup_seconds']:g} s of warm-up load: "
        "checked and counted in errors, left out of rates, latencies and CPU.",
        "",
        table(
            [
                "CPU, % of one core",
                "daphne",
                "celery",
                "loadgen",
                "mariadbd",
                "redis",
                "machine",
                "others",
            ],
            cpu_rows,
        ),
        "",
        f"CPU over the load window (psutil); machine = all {document['machine']['cpus']} cores "
        f"({100 * document['machine']['cpus']}% = full); others = machine minus the columns.",
        "",
        table(
            ["alert engine (Celery)", "queued at end", "drain s", "evaluated", "task failures"],
            celery_rows,
        ),
        "",
        "Tasks queued when the load stopped, seconds to drain them, stored messages evaluated",
        "after the drain, and task failures the worker logged during the run (see the JSON).",
    ]
    server = document["config"]["ingest_settings"]
    lines.append(
        f"Server: {document['config'].get('server', 'daphne')}, "
        + ", ".join(f"{name}={value}" for name, value in server.items())
        + (
            f"; --server-env {document['config']['server_env']}"
            if document["config"]["server_env"]
            else ""
        )
    )
    if any(r["scenario"]["kind"] == "batched" for r in results):
        lifted = " ".join(f"{k}={v}" for k, v in document["config"]["batched_server_env"].items())
        if document["config"]["url"]:
            lines.append(
                f"Batched runs: --url given, so the server's own rate limit applied (not {lifted})."
            )
        else:
            lines.append(f"Batched runs: daphne ran with {lifted} (per-device rate limit lifted).")
    lines += ["", "Targets:"]
    for check in document["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[check["passed"]]
        lines.append(f"  {verdict}  {check['text']}")
    lines += [f"Note: {note}" for note in document["notes"]]
    for result in results:
        for run in result["runs"]:
            if "profile" in run and run["profile"].get("text"):
                lines += [
                    "",
                    f"Profile of daphne during {result['scenario']['name']}:",
                    run["profile"]["text"],
                ]
    return "\n".join(lines)
