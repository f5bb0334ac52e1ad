"""config.rawsql against MariaDB: what the hot paths write is what the ORM would have stored."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.models import PatientAlertState
from config.rawsql import row_insert, rows_update
from tests import factories
from tests.processes import embedded_demo_environment, python_code_run

FIELDS = ("latest", "runs", "evaluated_at", "news2_total", "news2_complete", "news2_risk")


@pytest.mark.django_db
def test_it_updates_each_row_with_its_own_values_in_one_statement() -> None:
    states = [PatientAlertState.objects.create(patient=factories.patient()) for _ in range(4)]
    at = dt.datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=dt.UTC)
    rows = [
        (states[0].pk, [{"8867-4": [72.5, "x"]}, {"r1": 3}, at, 5, True, "medium"]),
        (states[2].pk, [{}, {}, None, None, False, ""]),
        (states[3].pk, [{"59408-5": [88]}, {}, at + dt.timedelta(seconds=1), 0, False, "low"]),
    ]
    with CaptureQueriesContext(connection) as queries:
        rows_update(PatientAlertState, FIELDS, rows)
    assert len(queries.captured_queries) == 1
    stored = {s["pk"]: s for s in PatientAlertState.objects.values("pk", *FIELDS)}
    for pk, values in rows:
        assert [stored[pk][name] for name in FIELDS] == values
    untouched = stored[states[1].pk]
    assert [untouched[name] for name in FIELDS] == [{}, {}, None, None, False, ""]


@pytest.mark.django_db
def test_it_updates_one_row_and_inserts_one() -> None:
    patient = factories.patient()
    pk = row_insert(
        PatientAlertState,
        patient_id=patient.pk,
        latest={"a": 1},
        runs={},
        news2_complete=False,
        news2_risk="",
    )
    at = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
    rows_update(PatientAlertState, ["evaluated_at", "news2_total"], [(pk, [at, 7])])
    rows_update(PatientAlertState, ["news2_total"], [])  # nothing to do: no statement, no error
    state = PatientAlertState.objects.get(pk=pk)
    assert (state.patient_id, state.latest, state.evaluated_at, state.news2_total) == (
        patient.pk,
        {"a": 1},
        at,
        7,
    )


SQLITE_SCRIPT = """
import datetime as dt
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import connection
from django.test.utils import CaptureQueriesContext
from alerts.models import PatientAlertState
from config.rawsql import rows_update
from patients.models import Patient
states = [
    PatientAlertState.objects.create(
        patient=Patient.objects.create(
            mrn=f"M{i}", family_name="F", given_name="G", date_of_birth=dt.date(1950, 1, 1)
        )
    )
    for i in range(300)
]
at = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
fields = ("latest", "runs", "evaluated_at", "news2_total", "news2_complete", "news2_risk")
rows = [(s.pk, [{"n": i}, {}, at, i % 20, bool(i % 2), "low"]) for i, s in enumerate(states)]
with CaptureQueriesContext(connection) as queries:
    rows_update(PatientAlertState, fields, rows)
stored = [
    [getattr(s, name) for name in fields] for s in PatientAlertState.objects.order_by("pk")
]
print(len(queries.captured_queries), stored == [values for _, values in rows])
"""


def test_it_splits_the_update_where_sqlite_limits_parameters(tmp_path: Path) -> None:
    # The embedded demo runs on SQLite (999 parameters a statement): 300 rows of 6 fields
    # need 3,900, so several statements, every row still with its own values.
    environment = embedded_demo_environment(tmp_path / "demo.sqlite3")
    result = python_code_run(SQLITE_SCRIPT, environment=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    statements, correct = result.stdout.split()
    assert int(statements) == 4  # 76 rows of 13 parameters fit in 999
    assert correct == "True"
