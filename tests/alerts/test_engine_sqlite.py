"""The alert engine on SQLite, the embedded demo's database (``bin/demo`` without servers).

The engine's statements are SQL written by hand (alerts.engine_sql): this runs them where
quoting, datetimes, booleans and UUIDs come back differently from MariaDB, through the same
entry point as the worker (``evaluate_messages``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import embedded_demo_environment, python_code_run

SCRIPT = """
import datetime as dt
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
from django.utils import timezone
from alerts.defaults import default_rules_ensure
from alerts.models import Alert, AlertRule, News2Score, PatientAlertState
from alerts.tasks import evaluate_messages
from monitoring.ingestion import message_parse
from monitoring.models import Device, IngestMessage, token_digest
from monitoring.services import (
    device_token_issue, message_digest, observation_enter, observations_record,
)
from patients.models import Bed, Patient, Ward
from patients.services import admission_create

default_rules_ensure(AlertRule)
ward = Ward.objects.create(code="w1", name="Ward 1")
bed = Bed.objects.create(ward=ward, label="B1")
patient = Patient.objects.create(
    mrn="M1", family_name="F", given_name="G", date_of_birth=dt.date(1950, 1, 1)
)
now = timezone.now()
admission_create(patient=patient, bed=bed, admitted_at=now - dt.timedelta(hours=1))
token = device_token_issue(device=Device.objects.create(serial="S1", bed=bed))
nurse = User.objects.create_user(username="nurse", password="x-password-123")


def post(n, at, **values):
    codes = {"spo2": "59408-5", "hr": "8867-4", "rr": "9279-1", "sbp": "8480-6",
             "temp": "8310-5"}
    units = {"spo2": "%", "hr": "/min", "rr": "/min", "sbp": "mm[Hg]", "temp": "Cel"}
    body = json.dumps({"message_id": f"m{n}", "observations": [
        {"code": codes[k], "value": v, "unit": units[k], "observed_at": at.isoformat()}
        for k, v in values.items()
    ]}).encode()
    outcome = observations_record(
        token_digest=token_digest(token), message=message_parse(body=body, now=now),
        body_digest=message_digest(body), now=at,
    )
    assert outcome.status == 201, outcome.body
    return IngestMessage.objects.get(message_id=f"m{n}").pk


start = now - dt.timedelta(minutes=2)
low = [post(i, start + dt.timedelta(seconds=i), spo2=85) for i in range(15)]
evaluated = evaluate_messages(message_pks=low)
again = evaluate_messages(message_pks=low)
fired = list(Alert.objects.values_list("rule__code", "state", "value"))
observation_enter(patient=patient, code="local-supplemental-o2", value=0, user=nurse,
                  observed_at=now - dt.timedelta(seconds=30))
observation_enter(patient=patient, code="local-acvpu", value=0, user=nurse,
                  observed_at=now - dt.timedelta(seconds=30))
normal = [post(100 + i, start + dt.timedelta(seconds=20 + i), spo2=97, hr=70, rr=14, sbp=120,
               temp=37.0) for i in range(3)]
evaluate_messages(message_pks=normal)
state = PatientAlertState.objects.get(patient=patient)
print(json.dumps({
    "evaluated": evaluated,
    "again": again,
    "fired": fired,
    "after": list(Alert.objects.values_list("state", "condition_cleared_at")),
    "unevaluated": IngestMessage.objects.filter(evaluated_at__isnull=True).count(),
    "news2": [state.news2_total, state.news2_complete],
    "history": list(
        News2Score.objects.order_by("observed_at").values_list("total", "complete", "parameters")
    ),
}, default=str))
"""


def test_it_fires_and_clears_an_alarm_on_the_embedded_demos_database(tmp_path: Path) -> None:
    environment = embedded_demo_environment(tmp_path / "demo.sqlite3")
    result = python_code_run(SCRIPT, environment=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["evaluated"] == 15
    assert outcome["again"] == 0  # claimed once: the second run finds them evaluated
    assert outcome["fired"] == [["59408-5", "active", 85.0]]
    # SpO2 back to 97 % (above the 92 % clearing level): the one alert, no second one, has
    # cleared (resolved, or awaiting acknowledgement if the rule latches).
    [(state, cleared_at)] = outcome["after"]
    assert state == "resolved" or cleared_at is not None
    assert outcome["unevaluated"] == 0
    # All seven NEWS2 inputs, the two staff-entered ones read by the engine: a complete 0.
    assert outcome["news2"] == [0, True]
    # The history's newest row, written by the hand-written INSERT: every parameter with its
    # code, value and score, as the chart shows them.
    total, complete, parameters = outcome["history"][-1]
    assert (total, complete) == (0, True)
    assert [(p["parameter"], p["code"], p["value"], p["score"]) for p in parameters] == [
        ("respiratory_rate", "9279-1", 14.0, 0),
        ("spo2", "59408-5", 97.0, 0),
        ("air_or_oxygen", "local-supplemental-o2", 0.0, 0),
        ("systolic_bp", "8480-6", 120.0, 0),
        ("pulse", "8867-4", 70.0, 0),
        ("consciousness", "local-acvpu", 0.0, 0),
        ("temperature", "8310-5", 37.0, 0),
    ]
