"""The alert engine's statements in every evaluation task, as SQL written from model metadata.

Every evaluation task ran about ten ORM queries whatever its size; building and compiling them
was about 45 % of the Celery worker's CPU under 150 paced devices (py-spy, 2026-11-22), more
than the database work. These are the same statements as the ORM wrote them (same columns and
conditions, and the same ORDER BY where the order matters: claiming and locking in key order,
readings oldest first; the models' default orderings are left out where a unique constraint
allows one row per key: ``one_open_alert_per_patient_rule``,
``one_open_admission_per_patient``), built once per process and shape, with their values
returned as the ORM returns them: aware UTC datetimes, booleans, UUIDs, model instances.

They run on the connection the models are written to (``default``): evaluation reads inside
its own transaction, never on a replica.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.db.transaction import TransactionManagementError

from alerts.evaluation import Sample
from alerts.models import Alert, PatientAlertState
from config.rawsql import (
    column_sql,
    concrete_field,
    datetime_from_db,
    placeholders,
    table_sql,
    uuid_from_db,
    write_database,
)
from monitoring.models import IngestMessage, Observation
from patients.models import Admission, Bed, Patient, Ward

logger = logging.getLogger(__name__)


def _rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with write_database(IngestMessage).cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _execute(sql: str, params: Sequence[Any]) -> None:
    with write_database(IngestMessage).cursor() as cursor:
        cursor.execute(sql, params)


def _datetime_param(moment: dt.datetime) -> Any:
    return write_database(IngestMessage).ops.adapt_datetimefield_value(moment)


@functools.cache
def _messages_claim_sql(vendor: str) -> str:
    pk = column_sql(IngestMessage, "m", "id")
    lock = " FOR UPDATE" if write_database(IngestMessage).features.has_select_for_update else ""
    return (
        f"SELECT {pk} FROM {table_sql(IngestMessage, 'm')} "  # noqa: S608 - names from model metadata
        f"WHERE {column_sql(IngestMessage, 'm', 'evaluated_at')} IS NULL AND {pk} IN ({{}}) "
        f"ORDER BY {pk}{lock}"
    )


def messages_claim(*, message_pks: Sequence[int]) -> list[int]:
    """Lock the messages among ``message_pks`` not evaluated yet, in primary-key order, and
    return their pks (ascending)."""
    if not write_database(IngestMessage).in_atomic_block:
        # The ORM refuses select_for_update outside a transaction; this SQL would lock nothing
        # and let two workers claim the same messages.
        raise TransactionManagementError("messages_claim locks rows: call it inside atomic()")
    if not message_pks:
        return []
    pks = sorted(set(message_pks))
    sql = _messages_claim_sql(write_database(IngestMessage).vendor).format(placeholders(len(pks)))
    return [row[0] for row in _rows(sql, pks)]


@functools.cache
def _messages_mark_sql(vendor: str) -> str:
    quote = write_database(IngestMessage).ops.quote_name
    meta = IngestMessage._meta
    evaluated_at = quote(concrete_field(IngestMessage, "evaluated_at").column)
    return (
        f"UPDATE {quote(meta.db_table)} SET {evaluated_at} = %s "  # noqa: S608 - names from model metadata
        f"WHERE {quote(meta.pk.column)} IN ({{}})"
    )


def messages_mark_evaluated(*, message_pks: Sequence[int], now: dt.datetime) -> None:
    """Set the messages' ``evaluated_at``: in the transaction that claimed them and applied
    what their readings caused, so they are evaluated exactly once."""
    if not message_pks:
        return
    sql = _messages_mark_sql(write_database(IngestMessage).vendor).format(
        placeholders(len(message_pks))
    )
    _execute(sql, [_datetime_param(now), *message_pks])


@functools.cache
def _samples_sql(vendor: str) -> str:
    o = functools.partial(column_sql, Observation, "o")
    return (
        f"SELECT {o('patient')}, {o('code')}, {o('value')}, {o('observed_at')}, {o('artifact')} "  # noqa: S608 - names from model metadata
        f"FROM {table_sql(Observation, 'o')} "
        f"WHERE {o('message')} IN ({{}}) AND {o('patient')} IS NOT NULL "
        f"ORDER BY {o('observed_at')}, {o('id')}"
    )


def samples_of_messages(*, message_pks: Sequence[int]) -> dict[int, list[Sample]]:
    """The messages' readings that have a patient, per patient, oldest first."""
    samples: dict[int, list[Sample]] = defaultdict(list)
    if not message_pks:
        return samples
    sql = _samples_sql(write_database(Observation).vendor).format(placeholders(len(message_pks)))
    for patient_id, code, value, observed_at, artifact in _rows(sql, message_pks):
        samples[patient_id].append(
            Sample(code, value, datetime_from_db(observed_at), bool(artifact))
        )
    return samples


@functools.cache
def _states_existing_sql(vendor: str) -> str:
    patient = column_sql(PatientAlertState, "s", "patient")
    return f"SELECT {patient} FROM {table_sql(PatientAlertState, 's')} WHERE {patient} IN ({{}})"  # noqa: S608 - names from model metadata


def states_existing(*, patient_ids: Sequence[int]) -> set[int]:
    """The patients among ``patient_ids`` that have a PatientAlertState row."""
    if not patient_ids:
        return set()
    sql = _states_existing_sql(write_database(PatientAlertState).vendor).format(
        placeholders(len(patient_ids))
    )
    return {row[0] for row in _rows(sql, patient_ids)}


# The keys of a patient's current stay, as engine.patients_evaluate reads them.
STAY_KEYS = (
    "patient_id",
    "patient__public_id",
    "patient__news2_spo2_scale2",
    "bed_id",
    "bed__public_id",
    "bed__ward_id",
    "bed__ward__code",
    "bed__ward__escalation_seconds",
)


@functools.cache
def _stays_sql(vendor: str) -> str:
    a = functools.partial(column_sql, Admission, "a")
    p = functools.partial(column_sql, Patient, "p")
    b = functools.partial(column_sql, Bed, "b")
    w = functools.partial(column_sql, Ward, "w")
    return (
        f"SELECT {a('patient')}, {p('public_id')}, {p('news2_spo2_scale2')}, {a('bed')}, "  # noqa: S608 - names from model metadata
        f"{b('public_id')}, {b('ward')}, {w('code')}, {w('escalation_seconds')} "
        f"FROM {table_sql(Admission, 'a')} "
        f"INNER JOIN {table_sql(Patient, 'p')} ON {a('patient')} = {p('id')} "
        f"INNER JOIN {table_sql(Bed, 'b')} ON {a('bed')} = {b('id')} "
        f"INNER JOIN {table_sql(Ward, 'w')} ON {b('ward')} = {w('id')} "
        f"WHERE {a('discharged_at')} IS NULL AND {a('patient')} IN ({{}})"
    )


def stays_current(*, patient_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each admitted patient's current stay: bed, ward and NEWS2 scale (``STAY_KEYS``).
    Patients not admitted now are absent."""
    if not patient_ids:
        return {}
    sql = _stays_sql(write_database(Admission).vendor).format(placeholders(len(patient_ids)))
    stays = {}
    for row in _rows(sql, patient_ids):
        stay = dict(zip(STAY_KEYS, row, strict=True))
        stay["patient__public_id"] = uuid_from_db(stay["patient__public_id"])
        stay["patient__news2_spo2_scale2"] = bool(stay["patient__news2_spo2_scale2"])
        stay["bed__public_id"] = uuid_from_db(stay["bed__public_id"])
        stays[stay["patient_id"]] = stay
    return stays


@functools.cache
def _alerts_open_sql(vendor: str) -> str:
    a = functools.partial(column_sql, Alert, "a")
    return (
        f"SELECT {a('id')}, {a('patient')}, {a('rule')}, {a('state')}, "  # noqa: S608 - names from model metadata
        f"{a('condition_cleared_at')} FROM {table_sql(Alert, 'a')} "
        f"WHERE {a('open_patient')} IN ({{}})"
    )


def alerts_open(
    *, patient_ids: Sequence[int]
) -> list[tuple[int, int, int, str, dt.datetime | None]]:
    """(pk, patient pk, rule pk, state, condition_cleared_at) of the patients' open alerts."""
    if not patient_ids:
        return []
    sql = _alerts_open_sql(write_database(Alert).vendor).format(placeholders(len(patient_ids)))
    return [
        (pk, patient_id, rule_id, state, datetime_from_db(cleared_at))
        for pk, patient_id, rule_id, state, cleared_at in _rows(sql, patient_ids)
    ]


@functools.cache
def _readings_since_sql(vendor: str, code_count: int) -> str:
    o = functools.partial(column_sql, Observation, "o")
    codes = placeholders(code_count)
    return (
        f"SELECT {o('patient')}, {o('code')}, {o('value')}, {o('observed_at')} "  # noqa: S608 - names from model metadata
        f"FROM {table_sql(Observation, 'o')} "
        f"WHERE {o('code')} IN ({codes}) AND {o('observed_at')} >= %s AND {o('patient')} IN ({{}}) "
        f"ORDER BY {o('observed_at')}, {o('id')}"
    )


def readings_since(
    *, patient_ids: Sequence[int], codes: Sequence[str], since: dt.datetime
) -> list[tuple[int, str, float, dt.datetime]]:
    """(patient pk, code, value, observed_at) of the patients' readings of ``codes`` observed
    at or after ``since``, oldest first."""
    if not patient_ids or not codes:
        return []
    sql = _readings_since_sql(write_database(Observation).vendor, len(codes)).format(
        placeholders(len(patient_ids))
    )
    return [
        (patient_id, code, value, datetime_from_db(observed_at))
        for patient_id, code, value, observed_at in _rows(
            sql, [*codes, _datetime_param(since), *patient_ids]
        )
    ]


def states_lock(*, patient_ids: Sequence[int]) -> dict[int, PatientAlertState]:
    """Lock the patients' PatientAlertState rows (they exist) and read them, by patient."""
    ids = sorted(patient_ids)
    database = write_database(PatientAlertState)
    # Locked in one statement that walks the unique index on patient_id in ascending order,
    # so every evaluation takes its locks in the same order and none deadlock. The index is
    # forced: on a small table MariaDB may plan "patient_id IN (...)" as a locking full scan,
    # which waits on every row any other evaluation holds and serialises all workers
    # (measured by bench/alerts). One row per statement, as before, cost a round trip per
    # patient: with the write-back (alerts.engine._states_save), two thirds of an
    # evaluation's statements.
    # The same statement reads the rows: a locking read returns their latest committed
    # versions, which its locks then freeze. (It was a second, plain query; one statement less
    # per task, and the ORM's compiling of it, was a tenth of an evaluation task's CPU.)
    # (SQLite, the embedded demo's database, has no FOR UPDATE: its writes are serialised.)
    if database.features.has_select_for_update:
        states = list(PatientAlertState.objects.raw(_state_lock_sql(len(ids)), ids))
    else:
        states = list(PatientAlertState.objects.filter(patient_id__in=ids))
    return {state.patient_id: state for state in states}


@functools.cache
def _state_lock_statement() -> tuple[str, str, str, str]:
    """(table, column, "FORCE INDEX (…)", the columns of a row) for locking and reading
    PatientAlertState rows by patient, as quoted SQL, with the unique index on patient_id
    looked up in the database once per process.

    Should the lookup not find exactly one such index (a future migration), evaluation goes on
    without the hint, logged as an error: locking may then serialise the workers, but alarms
    keep being evaluated."""
    meta = PatientAlertState._meta
    column = concrete_field(PatientAlertState, "patient").column
    database = write_database(PatientAlertState)
    quote = database.ops.quote_name
    columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
    with database.cursor() as cursor:
        constraints = database.introspection.get_constraints(cursor, meta.db_table)
    indexes = [
        name
        for name, constraint in constraints.items()
        if constraint["unique"] and constraint["columns"] == [column] and constraint["index"]
    ]
    if len(indexes) != 1:
        logger.error(
            "no single unique index on %s.%s (found %r): locking alert states without it",
            meta.db_table,
            column,
            indexes,
        )
        return quote(meta.db_table), quote(column), "", columns
    return quote(meta.db_table), quote(column), f"FORCE INDEX ({quote(indexes[0])}) ", columns


def _state_lock_sql(count: int) -> str:
    table, column, hint, columns = _state_lock_statement()
    return (
        f"SELECT {columns} FROM {table} {hint}WHERE {column} IN ({placeholders(count)}) "  # noqa: S608 - names from model metadata
        f"ORDER BY {column} FOR UPDATE"
    )
