"""The SQL behind the records API's heavy reads, and what MariaDB does with it.

Each case runs once in this process under ``CaptureQueriesContext``: the endpoints through
Django's test client (the same view, serializer and selector code daphne runs, with the same
API token), the selectors directly. Every captured SELECT that reads ``monitoring_observation``
is explained with ``EXPLAIN FORMAT=JSON`` (the optimizer's estimate) and ``ANALYZE FORMAT=JSON``
(MariaDB runs it and adds what happened: ``r_rows``, times, pages). The key facts, per table
access: the access type and index (with the key parts used), rows estimated and examined,
``Using index`` (covering), ``Using index for group-by`` (loose scan), and whether a temporary
table or a filesort was needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

OBSERVATION_TABLE = "monitoring_observation"
TREND_PATH = "/api/v1/observations/trend/"


def _walk(node: Any, flags: frozenset[str] = frozenset()) -> Iterator[tuple[dict[str, Any], set]]:
    """(table access, the operations around it) for every table access in a JSON plan."""
    if isinstance(node, dict):
        here = set(flags)
        if "filesort" in node:
            here.add("filesort")
        if "temporary_table" in node:
            here.add("temporary")
        for key, value in node.items():
            if key == "table" and isinstance(value, dict):
                yield value, here
            yield from _walk(value, frozenset(here))
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, flags)


def plan_facts(explain: dict[str, Any], analyze: dict[str, Any] | None) -> list[dict[str, Any]]:
    facts = []
    analysed = {t.get("table_name"): t for t, _ in _walk(analyze)} if analyze else {}
    for access, around in _walk(explain):
        name = access.get("table_name")
        actual = analysed.get(name, {})
        group_by = access.get("using_index_for_group_by")
        facts.append(
            {
                "table": name,
                "access_type": access.get("access_type"),
                "key": access.get("key"),
                "used_key_parts": access.get("used_key_parts"),
                "rows_estimated": access.get("rows"),
                "rows_examined": actual.get("r_rows"),
                "filtered": access.get("filtered"),
                "using_index": bool(access.get("using_index")),
                "using_index_for_group_by": group_by or False,
                "filesort": "filesort" in around,
                "temporary": "temporary" in around,
                "table_time_ms": actual.get("r_table_time_ms"),
                "pages_accessed": (actual.get("r_engine_stats") or {}).get("pages_accessed"),
                "condition": access.get("attached_condition"),
            }
        )
    return facts


def _explained(sql: str) -> dict[str, Any]:
    from django.db import connection

    entry: dict[str, Any] = {"sql": sql}
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN FORMAT=JSON {sql}")
        entry["explain"] = json.loads(cursor.fetchone()[0])
        cursor.execute(f"ANALYZE FORMAT=JSON {sql}")
        entry["analyze"] = json.loads(cursor.fetchone()[0])
    entry["total_time_ms"] = entry["analyze"].get("query_block", {}).get("r_total_time_ms")
    entry["facts"] = plan_facts(entry["explain"], entry["analyze"])
    return entry


def _capture(run: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        outcome = run()
    return outcome, list(captured.captured_queries)


def plans_capture(
    args: argparse.Namespace, data: dict[str, Any], token: str, *, latest_path: str | None
) -> dict[str, Any]:
    from django.test import Client

    from monitoring.selectors import latest_vitals
    from monitoring.vitals import SPO2
    from portal.snapshot import ward_snapshot

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    end = data["end"]
    query = {
        "patient": data["patient"],
        "from": (end - dt.timedelta(hours=args.hours)).isoformat(),
        "to": end.isoformat(),
        "bucket": args.bucket,
    }
    cases: dict[str, Callable[[], Any]] = {
        "trend, one vital": lambda: client.get(TREND_PATH, {**query, "code": SPO2.code}),
        "trend, all vitals": lambda: client.get(TREND_PATH, query),
    }
    if latest_path:
        cases["ward latest vitals"] = lambda: client.get(latest_path)
    else:
        cases["ward latest vitals"] = lambda: latest_vitals(patient_ids=data["patient_ids"])
    cases["ward snapshot (dashboard connect)"] = lambda: ward_snapshot(ward_code=data["ward"])
    plans = {}
    for name, run in cases.items():
        outcome, queries = _capture(run)
        reads = [
            q
            for q in queries
            if OBSERVATION_TABLE in q["sql"] and q["sql"].lstrip().upper().startswith("SELECT")
        ]
        plans[name] = {
            "status": getattr(outcome, "status_code", "in-process"),
            "queries_total": len(queries),
            "all_sql": [q["sql"][:500] for q in queries],
            "observation_queries": [
                {**_explained(q["sql"]), "captured_time_s": float(q["time"])} for q in reads
            ],
        }
    return plans


def _fact_line(fact: dict[str, Any]) -> str:
    parts = [
        f"{fact['access_type']}",
        f"key={fact['key'] or '-'}"
        + (f"({','.join(fact['used_key_parts'])})" if fact["used_key_parts"] else ""),
        f"rows est {fact['rows_estimated']:,}" if fact["rows_estimated"] is not None else "",
        f"examined {fact['rows_examined']:,.0f}" if fact["rows_examined"] is not None else "",
    ]
    if fact["using_index"]:
        parts.append("Using index")
    if fact["using_index_for_group_by"]:
        parts.append("Using index for group-by")
    if fact["temporary"]:
        parts.append("temporary")
    if fact["filesort"]:
        parts.append("filesort")
    return ", ".join(p for p in parts if p)


def plan_facts_text(plans: dict[str, Any]) -> list[str]:
    lines = []
    for name, plan in plans.items():
        reads = plan["observation_queries"]
        lines.append(
            f"  {name}: {plan['queries_total']} queries, {len(reads)} on {OBSERVATION_TABLE}"
            + (f" (HTTP {plan['status']})" if plan["status"] != "in-process" else "")
        )
        for number, query in enumerate(reads, 1):
            time_ms = query["total_time_ms"]
            for fact in query["facts"]:
                lines.append(
                    f"    q{number} ({time_ms:,.0f} ms in ANALYZE): {_fact_line(fact)}"
                    if time_ms is not None
                    else f"    q{number}: {_fact_line(fact)}"
                )
        if name == "trend, one vital":
            pushed = any("code` = " in q["sql"] or "`code` IN" in q["sql"] for q in reads)
            lines.append(
                "    the code filter is "
                + ("in the SQL" if pushed else "NOT in the SQL: all vitals are read, then dropped")
            )
    return lines
