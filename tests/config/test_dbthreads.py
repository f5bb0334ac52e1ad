"""config.dbthreads: long-lived database threads, on the real MariaDB, with a real lost connection
(the server kills it, as a restart or an idle timeout would)."""

from __future__ import annotations

import threading

import MySQLdb
import pytest
from django.db import OperationalError, connection, connections

from config.dbthreads import DatabaseThreads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _connection_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


def _thread_name() -> str:
    return threading.current_thread().name


def _kill(connection_id: int) -> None:
    settings = connections["default"].settings_dict
    other = MySQLdb.connect(
        host=settings["HOST"], port=int(settings["PORT"]), user=settings["USER"],
        password=settings["PASSWORD"],
    )  # fmt: skip
    try:
        other.cursor().execute(f"KILL CONNECTION {int(connection_id)}")
    finally:
        other.close()


async def test_calls_reuse_the_threads_connection() -> None:
    pool = DatabaseThreads("test-db", lambda: 1)
    first = await pool.run(_connection_id)()
    second = await pool.run(_connection_id)()
    assert first == second
    assert (await pool.run(_thread_name)()).startswith("test-db")


async def test_a_lost_connection_is_replaced_and_the_call_retried() -> None:
    pool = DatabaseThreads("test-db", lambda: 1)
    before = await pool.run(_connection_id)()
    _kill(before)
    after = await pool.run(_connection_id)()  # fails on the dead connection, retried
    assert after != before


async def test_without_retry_the_error_propagates_and_the_next_call_reconnects() -> None:
    pool = DatabaseThreads("test-db", lambda: 1)
    before = await pool.run(_connection_id)()
    _kill(before)
    with pytest.raises(OperationalError) as raised:
        await pool.run(_connection_id, retry_lost_connection=False)()
    assert raised.value.args[0] in (2006, 2013)
    assert await pool.run(_connection_id)() != before
