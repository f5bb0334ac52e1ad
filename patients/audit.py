"""Recording reads of patients' records (the access log) in one query per request."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from config.observability import request_id
from config.rawsql import (
    column_sql,
    insert_into_sql,
    rows_insert,
    table_sql,
    values_adapted,
    write_database,
)
from patients.models import AccessLog, Admission, ApiToken, Bed, Ward


def client_address(request: HttpRequest | None) -> str | None:
    # REMOTE_ADDR is the proxy behind a reverse proxy; django-axes' ipware setting names how
    # many proxies to trust, and the same rule applies here.
    if request is None:
        return None
    from django.conf import settings

    proxies = getattr(settings, "AXES_IPWARE_PROXY_COUNT", 0)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR") or None


# In the order ``access_record`` passes the values (attnames for the foreign keys).
_ACCESS_COLUMNS = (
    "at",
    "patient_id",
    "user_id",
    "token_id",
    "action",
    "resource",
    "address",
    "request_id",
)


def _shared_values(
    *, user: Any, token: ApiToken | None, action: str, resource: str, address: str | None
) -> tuple[Any, ...]:
    """What every row of one read holds: the values of ``_ACCESS_COLUMNS`` after the time and
    the patient."""
    return (
        user.pk if user is not None and user.is_authenticated else None,
        token.pk if token is not None else None,
        action,
        resource[:200],
        address,
        request_id.get()[:64],
    )


def access_record(
    *,
    user: Any,
    patient_ids: Iterable[int | None],
    action: str,
    resource: str = "",
    address: str | None = None,
    token: ApiToken | None = None,
) -> None:
    """Append one access-log row per patient read (one INSERT whatever their number).

    Written with ``config.rawsql.rows_insert`` (one multi-row INSERT on MySQL) rather than
    ``bulk_create``, whose per-field SQL compilation was the largest cost of a dashboard
    connecting (36 rows per ward, bench fanout). Each value is adapted by its field (an empty
    address stored as NULL), as ``bulk_create`` would write it; the model tests read the rows
    back through the ORM.
    """
    at = timezone.now()
    shared = _shared_values(
        user=user, token=token, action=action, resource=resource, address=address
    )
    rows_insert(
        AccessLog,
        _ACCESS_COLUMNS,
        [(at, patient, *shared) for patient in dict.fromkeys(patient_ids)],
    )


# The columns ``access_record_ward`` passes as parameters: all but the patient's.
_WARD_ACCESS_PARAMETERS = tuple(name for name in _ACCESS_COLUMNS if name != "patient_id")


def access_record_ward(
    *, user: Any, ward_code: str, action: str, resource: str = "", address: str | None = None
) -> None:
    """Append one access-log row for each patient admitted to the ward now: one
    ``INSERT … SELECT``, with no row passing through Python.

    For a dashboard subscription, which reads every patient on the ward and is recorded on
    every connect (a reconnect storm records a thousand in ten seconds): reading the
    admissions through the ORM and inserting their rows cost ~1.1 ms of CPU per connect.
    The values are those of ``access_record``, adapted by their fields as it adapts them.

    On MariaDB the connections run at READ COMMITTED (``config/settings.py``), so the SELECT
    is a consistent read that locks no admission or bed row (an admission or discharge never
    waits for it), and MIXED binary logging writes the statement as rows. With the default
    ``innodb_autoinc_lock_mode`` of 1 the access log's auto-increment lock is held for the
    statement (a ward's rows, well under a millisecond), not only for the row count.
    """
    shared = _shared_values(
        user=user, token=None, action=action, resource=resource, address=address
    )
    values = values_adapted(AccessLog, _WARD_ACCESS_PARAMETERS, (timezone.now(), *shared))
    database = write_database(AccessLog)
    with database.cursor() as cursor:
        cursor.execute(_ward_access_insert_sql(database.vendor), [*values, ward_code])


@functools.cache
def _ward_access_insert_sql(vendor: str) -> str:
    # The admitted patient in its column's place, a parameter in every other one; ordered by
    # patient so that the rows' ids do not depend on a plan.
    selected = ", ".join(
        column_sql(Admission, "a", "patient") if name == "patient_id" else "%s"
        for name in _ACCESS_COLUMNS
    )
    return (
        f"{insert_into_sql(AccessLog, _ACCESS_COLUMNS)}"  # noqa: S608 - names from model metadata
        f" SELECT {selected} FROM {table_sql(Admission, 'a')}"
        f" JOIN {table_sql(Bed, 'b')} ON {column_sql(Bed, 'b', 'id')} ="
        f" {column_sql(Admission, 'a', 'bed')}"
        f" JOIN {table_sql(Ward, 'w')} ON {column_sql(Ward, 'w', 'id')} ="
        f" {column_sql(Bed, 'b', 'ward')}"
        f" WHERE {column_sql(Ward, 'w', 'code')} = %s"
        f" AND {column_sql(Admission, 'a', 'discharged_at')} IS NULL"
        f" ORDER BY {column_sql(Admission, 'a', 'patient')}"
    )
