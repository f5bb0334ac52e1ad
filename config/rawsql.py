"""SQL written from model metadata, for the hot paths: INSERTs, by-key UPDATEs, and the
helpers a statement written by hand needs (quoted names, ``IN`` placeholders, values read
back as the ORM returns them).

On the ingestion and evaluation paths, building and compiling the ORM's query for every call
cost more than the database work itself (``objects.create``, ``bulk_update``'s CASE WHEN per
field and row, the evaluation task's reads: py-spy during ``bin/bench ingest`` and ``bin/bench
alerts``). These statements are built from model metadata without the ORM's query compiler
(one-row statements once per model and field list), and each value is adapted by its own field
(``get_db_prep_save``: JSON, datetimes), exactly as the ORM would store it, on the database the
router writes the model to.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, overload

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.utils.dateparse import parse_datetime


def concrete_field(model: type[Model], name: str) -> Field[Any, Any]:
    """``model``'s field ``name`` (its name or attname) that has a column."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:
        raise TypeError(f"{model.__name__}.{name} has no column")
    return field


def write_database(model: type[Model]) -> BaseDatabaseWrapper:
    """The connection the router writes ``model`` to, where these statements run."""
    return connections[router.db_for_write(model)]


@functools.cache
def _statement(vendor: str, kind: str, model: type[Model], names: tuple[str, ...]) -> str:
    if kind == "insert":
        return f"{insert_into_sql(model, names)} VALUES ({placeholders(len(names))})"
    meta = model._meta
    quote = write_database(model).ops.quote_name
    columns = [quote(concrete_field(model, name).column) for name in names]  # names or attnames
    table = quote(meta.db_table)
    assignments = ", ".join(f"{column} = %s" for column in columns)
    return f"UPDATE {table} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608 - names from model metadata


def _adapted(
    model: type[Model], names: Sequence[str], values: Sequence[Any], database: BaseDatabaseWrapper
) -> list[Any]:
    return [
        concrete_field(model, name).get_db_prep_save(value, database)
        for name, value in zip(names, values, strict=True)
    ]


def insert_into_sql(model: type[Model], names: Sequence[str]) -> str:
    """``INSERT INTO table (columns)`` for ``model``'s fields ``names`` (names or attnames),
    quoted: the head of this module's INSERTs and of an ``INSERT … SELECT`` written by hand."""
    quote = write_database(model).ops.quote_name
    columns = ", ".join(quote(concrete_field(model, name).column) for name in names)
    return f"INSERT INTO {quote(model._meta.db_table)} ({columns})"


def table_sql(model: type[Model], alias: str) -> str:
    """``model``'s table, quoted, with ``alias``: for a statement written by hand."""
    return f"{write_database(model).ops.quote_name(model._meta.db_table)} {alias}"


def column_sql(model: type[Model], alias: str, field: str) -> str:
    """The column of ``model``'s ``field`` (name or attname), quoted, under ``alias``."""
    return f"{alias}.{write_database(model).ops.quote_name(concrete_field(model, field).column)}"


def placeholders(count: int) -> str:
    """``%s, %s, …``: the parameters of an ``IN (…)`` of ``count`` values (at least one)."""
    if count < 1:
        raise ValueError("an IN list needs at least one value")
    return ", ".join(["%s"] * count)


@overload
def datetime_from_db(value: None) -> None: ...
@overload
def datetime_from_db(value: dt.datetime | str) -> dt.datetime: ...
def datetime_from_db(value: dt.datetime | str | None) -> dt.datetime | None:
    """A datetime column's value as the ORM returns it, aware and UTC. Raw rows hold naive
    datetimes (MariaDB) or their text (SQLite, the embedded demo's database), in UTC: Django
    writes UTC (``USE_TZ``, no database ``TIME_ZONE``) and the MariaDB connections'
    ``init_command`` sets ``time_zone='+00:00'`` (config/settings.py)."""
    if value is None:
        return None
    moment = parse_datetime(value) if isinstance(value, str) else value
    if moment is None:
        raise ValueError(f"not a datetime: {value!r}")
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def uuid_from_db(value: Any) -> uuid.UUID | None:
    """A UUID column's value as the ORM returns it (MariaDB's native ``uuid`` type gives the
    hyphenated text, a ``char(32)`` or SQLite the 32 hex digits: ``uuid.UUID`` takes both)."""
    return None if value is None else uuid.UUID(str(value))


def values_adapted(model: type[Model], names: Sequence[str], values: Sequence[Any]) -> list[Any]:
    """``values`` of ``model``'s fields ``names`` as the statements here pass them (each
    adapted by its field for the database the model is written to): for a statement written
    by hand."""
    return _adapted(model, names, values, write_database(model))


def row_insert(model: type[Model], **values: Any) -> int:
    """INSERT one row of ``model`` from field values (names or attnames); return its pk."""
    names = tuple(values)
    database = write_database(model)
    sql = _statement(database.vendor, "insert", model, names)
    with database.cursor() as cursor:
        cursor.execute(sql, _adapted(model, names, list(values.values()), database))
        return int(database.ops.last_insert_id(cursor, model._meta.db_table, model._meta.pk.column))


def rows_insert(model: type[Model], names: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """INSERT rows of ``model``, each the values of the fields ``names`` (names or attnames),
    with one ``executemany`` (one multi-row INSERT on MySQL)."""
    names = tuple(names)
    database = write_database(model)
    params = [_adapted(model, names, values, database) for values in rows]
    if not params:
        return
    with database.cursor() as cursor:
        cursor.executemany(_statement(database.vendor, "insert", model, names), params)


def rows_insert_returning(
    model: type[Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    returning: Sequence[str],
) -> list[tuple[Any, ...]]:
    """INSERT rows of ``model`` in one statement and return the columns ``returning`` of each
    inserted row (``INSERT … RETURNING``: MariaDB 10.5+, SQLite 3.35+, where the database's
    ``can_return_rows_from_bulk_insert``). Neither database promises the returned rows' order,
    so return a unique key among ``returning`` and match the rows by it."""
    names = tuple(names)
    if not rows:
        return []
    database = write_database(model)
    if not database.features.can_return_rows_from_bulk_insert:
        raise NotImplementedError(f"{database.vendor} cannot return rows from an INSERT")
    limit = database.features.max_query_params
    per_statement = len(rows) if limit is None else max(1, limit // len(names))
    quote = database.ops.quote_name
    tail = ", ".join(quote(concrete_field(model, name).column) for name in returning)
    one = f"({placeholders(len(names))})"
    result: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values_sql = ", ".join([one] * len(chunk))
        sql = f"{insert_into_sql(model, names)} VALUES {values_sql} RETURNING {tail}"
        params = [param for values in chunk for param in _adapted(model, names, values, database)]
        with database.cursor() as cursor:
            cursor.execute(sql, params)
            result.extend(tuple(row) for row in cursor.fetchall())
    return result


def rows_update(
    model: type[Model], names: Sequence[str], rows: Iterable[tuple[Any, Sequence[Any]]]
) -> None:
    """UPDATE the fields ``names`` of each ``(pk, values)`` row, all rows in one statement.

    Several rows take one ``UPDATE … SET f = CASE pk WHEN … THEN … END … WHERE pk IN (…)``:
    one round trip, where a statement per row cost one each (``executemany`` sends UPDATEs
    one by one), two per patient with the locking reads in every alert evaluation. Rows are
    split into several statements only where the database limits a statement's parameters
    (SQLite, the embedded demo's)."""
    rows = list(rows)
    names = tuple(names)
    if not rows:
        return
    database = write_database(model)
    limit = database.features.max_query_params
    per_statement = len(rows) if limit is None else max(1, limit // (2 * len(names) + 1))
    for start in range(0, len(rows), per_statement):
        _rows_update(model, names, rows[start : start + per_statement], database)


def _rows_update(
    model: type[Model],
    names: tuple[str, ...],
    rows: list[tuple[Any, Sequence[Any]]],
    database: BaseDatabaseWrapper,
) -> None:
    if len(rows) == 1:
        [(pk, values)] = rows
        sql = _statement(database.vendor, "update", model, names)
        params = [*_adapted(model, names, values, database), pk]
    else:
        meta = model._meta
        quote = database.ops.quote_name
        key = quote(meta.pk.column)
        cases = " ".join(["WHEN %s THEN %s"] * len(rows))
        assignments = ", ".join(
            f"{quote(concrete_field(model, name).column)} = CASE {key} {cases} END"
            for name in names
        )
        keys = placeholders(len(rows))
        sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {key} IN ({keys})"  # noqa: S608 - names from model metadata
        adapted = [_adapted(model, names, values, database) for _, values in rows]
        params = [
            param
            for column in range(len(names))
            for (pk, _), row in zip(rows, adapted, strict=True)
            for param in (pk, row[column])
        ]
        params.extend(pk for pk, _ in rows)
    with database.cursor() as cursor:
        cursor.execute(sql, params)
