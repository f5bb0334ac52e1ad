"""Reads of observations for charts."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import NotSupportedError
from django.db.models import Avg, Count, Expression, F, Func, IntegerField, Max, Min
from django.db.models.sql.compiler import SQLCompiler

from monitoring.models import Observation
from monitoring.vitals import DEVICE_VITALS


class EpochBucket(Func):
    """The index of the ``seconds``-wide time bucket holding a datetime: floor(epoch / width).

    Computed by the database, so a day of 1 Hz readings is aggregated where it lies instead of
    being shipped to Python. Buckets are aligned on the Unix epoch, so a bucket's start is
    ``index * seconds`` whatever range is asked for.
    """

    output_field = IntegerField()

    def __init__(self, expression: str | Expression, *, seconds: int) -> None:
        if seconds < 1:
            raise ValueError("a bucket is at least one second wide")
        self.seconds = int(seconds)
        super().__init__(F(expression) if isinstance(expression, str) else expression)

    def as_sql(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedError("EpochBucket is implemented for MariaDB/MySQL and SQLite only")

    def as_mysql(
        self, compiler: SQLCompiler, connection: Any, **extra_context: Any
    ) -> tuple[str, list[Any]]:
        # Sessions run with time_zone='+00:00' (settings) and Django stores naive UTC, so
        # UNIX_TIMESTAMP reads the stored value as UTC.
        sql, params = compiler.compile(self.source_expressions[0])
        return f"FLOOR(UNIX_TIMESTAMP({sql}) / %s)", [*params, self.seconds]

    def as_sqlite(
        self, compiler: SQLCompiler, connection: Any, **extra_context: Any
    ) -> tuple[str, list[Any]]:
        # '%%s' because Django's SQLite backend turns a bare %s into a query parameter.
        # Integer division on integers floors for the non-negative epochs stored here.
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(CAST(strftime('%%s', {sql}) AS INTEGER) / %s)", [*params, self.seconds]


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One time bucket of one vital: its start, the readings' min, mean and max, and count."""

    at: dt.datetime
    min: float
    mean: float
    max: float
    count: int


def observation_trend(
    *,
    patient_id: int,
    start: dt.datetime,
    end: dt.datetime,
    bucket_seconds: int,
    code: str | None = None,
) -> dict[str, list[TrendPoint]]:
    """Per vital code, the patient's readings in [start, end) grouped in ``bucket_seconds``
    buckets, oldest first: one query, aggregated by the database (GROUP BY code, bucket).

    Readings the device marked as artifacts are left out: they are kept for the record but are
    unreliable by the device's own account, and a trend drawn through them would mislead.
    """
    readings = Observation.objects.filter(
        patient_id=patient_id, observed_at__gte=start, observed_at__lt=end, artifact=False
    )
    if code is not None:
        # One vital is one range of the (patient, code, observed_at) index: a sixth of the rows.
        readings = readings.filter(code=code)
    rows = (
        readings.annotate(bucket=EpochBucket("observed_at", seconds=bucket_seconds))
        .values("code", "bucket")
        .annotate(low=Min("value"), mean=Avg("value"), high=Max("value"), count=Count("pk"))
        .order_by("code", "bucket")
    )
    trend: dict[str, list[TrendPoint]] = {}
    for row in rows:
        trend.setdefault(row["code"], []).append(
            TrendPoint(
                at=dt.datetime.fromtimestamp(int(row["bucket"]) * bucket_seconds, tz=dt.UTC),
                min=row["low"],
                mean=row["mean"],
                max=row["high"],
                count=row["count"],
            )
        )
    return trend


def latest_vitals(*, patient_ids: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """The newest reading of each device vital per patient, in two index-only queries.

    MAX(observed_at) grouped by (patient, code) is a loose index scan of the (patient, code,
    observed_at) index; the rows are then fetched by their exact keys.
    """
    if not patient_ids:
        return {}
    newest = list(
        Observation.objects.filter(patient_id__in=patient_ids, code__in=list(DEVICE_VITALS))
        .values("patient_id", "code")
        .annotate(at=Max("observed_at"))
        .order_by()
    )
    result: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    if not newest:
        return result
    wanted = {(row["patient_id"], row["code"], row["at"]) for row in newest}
    rows = Observation.objects.filter(
        patient_id__in={p for p, _, _ in wanted},
        code__in={c for _, c, _ in wanted},
        observed_at__in={a for _, _, a in wanted},
    ).values_list("patient_id", "code", "value", "unit", "observed_at", "artifact")
    for patient_id, code, value, unit, observed_at, artifact in rows:
        if (patient_id, code, observed_at) in wanted:
            result[patient_id][code] = {
                "value": value,
                "unit": unit,
                "observed_at": observed_at.isoformat(),
                "artifact": artifact,
            }
    return result


def sparklines(
    *,
    patient_ids: list[int],
    start: dt.datetime,
    end: dt.datetime,
    bucket_seconds: int,
) -> dict[int, dict[str, list[tuple[int, float]]]]:
    """Per patient and vital, the mean of each bucket in [start, end) as (epoch seconds of the
    bucket's start, mean): one query for a whole ward, grouped by the database."""
    if not patient_ids:
        return {}
    rows = (
        Observation.objects.filter(
            patient_id__in=patient_ids,
            code__in=list(DEVICE_VITALS),
            observed_at__gte=start,
            observed_at__lt=end,
            artifact=False,
        )
        .annotate(bucket=EpochBucket("observed_at", seconds=bucket_seconds))
        .values("patient_id", "code", "bucket")
        .annotate(mean=Avg("value"))
        .order_by("patient_id", "code", "bucket")
    )
    lines: dict[int, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for row in rows:
        # Epoch seconds, not ISO strings: a ward's sparklines are thousands of points, and
        # every dashboard connect receives them.
        lines[row["patient_id"]].setdefault(row["code"], []).append(
            (int(row["bucket"]) * bucket_seconds, round(row["mean"], 1))
        )
    return lines
