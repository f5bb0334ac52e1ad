"""The scenario harness: reading streams in, exact alert transitions out.

Each file in ``scenarios/`` describes one patient: extra rules, a timeline of device messages,
clinician acknowledgements and scheduler ticks, and the exact list of alert events expected.
The timeline runs through the real ingestion service and the real Celery task functions
against MariaDB, with the clock set by the file (seconds from the scenario's start), never by
sleeping.

File format (TOML)::

    description = "..."
    spo2_scale2 = false               # optional patient setting
    [[rules]]                          # optional: rules beyond the hospital defaults
    scope = "patient"                  # "patient" | "ward" | "hospital"
    name = "..."; kind = "threshold"; code = "59408-5"; low = 88.0; priority = "high"
    [[timeline]]
    at = 0                             # seconds
    until = 9                          # optional: repeat every `every` (default 1) s to `until`
    readings = { "59408-5" = 95 }      # one device message per time point
    artifact = ["59408-5"]             # optional: codes the device flags as artifact
    [[timeline]]
    at = 30
    acknowledge = "SpO2 below 90 %"    # a clinician acknowledges the rule's open alert
    [[timeline]]
    at = 45
    tick = true                        # the scheduler's offline check and escalation
    expected = [[15, "SpO2 below 90 %", "fired"], ...]   # [at, rule name, event kind]
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from alerts.defaults import default_rules_ensure
from alerts.models import Alert, AlertEvent, AlertRule
from alerts.services import alert_acknowledge
from alerts.tasks import alerts_tick, evaluate_messages
from monitoring.ingestion import message_parse
from monitoring.models import IngestMessage
from monitoring.services import device_token_issue, message_digest, observations_record
from monitoring.vitals import VITALS
from tests import factories

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.toml"))
START = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC)


def _moments(step: dict[str, Any]) -> list[float]:
    at, until, every = step["at"], step.get("until", step["at"]), step.get("every", 1)
    count = round((until - at) / every) + 1
    return [at + i * every for i in range(count)]


class Bedside:
    def __init__(self, scenario: dict[str, Any]) -> None:
        default_rules_ensure(AlertRule)
        self.ward = factories.ward()
        bed = factories.bed(self.ward)
        self.admission = factories.admitted_patient(
            bed, news2_spo2_scale2=scenario.get("spo2_scale2", False)
        )
        self.admission.admitted_at = START - dt.timedelta(hours=1)
        self.admission.save(update_fields=["admitted_at"])
        self.device = factories.device(bed)
        self.token = device_token_issue(device=self.device)
        self.nurse = User.objects.create_user(username=f"nurse-{self.ward.code}")
        self.sequence = 0
        for rule in scenario.get("rules", []):
            self._rule(dict(rule))

    def _rule(self, rule: dict[str, Any]) -> None:
        scope = rule.pop("scope")
        if scope == "patient":
            rule["patient"] = self.admission.patient
        elif scope == "ward":
            rule["ward"] = self.ward
        AlertRule.objects.create(**rule)

    def post(self, at: dt.datetime, readings: dict[str, float], artifact: list[str]) -> None:
        self.sequence += 1
        body = json.dumps(
            {
                "message_id": f"m{self.sequence}",
                "observations": [
                    {
                        "code": code,
                        "value": value,
                        "unit": VITALS[code].unit,
                        "observed_at": at.isoformat(),
                        "artifact": code in artifact,
                    }
                    for code, value in readings.items()
                ],
            }
        ).encode()
        outcome = observations_record(
            token_digest=self.token_digest,
            message=message_parse(body=body, now=at),
            body_digest=message_digest(body),
            now=at,
        )
        assert outcome.status == 201, outcome.body
        pk = IngestMessage.objects.get(device=self.device, message_id=f"m{self.sequence}").pk
        evaluate_messages(message_pks=[pk], now=at.isoformat())

    @property
    def token_digest(self) -> str:
        from monitoring.models import token_digest

        return token_digest(self.token)

    def acknowledge(self, at: dt.datetime, rule_name: str) -> None:
        alert = Alert.objects.get(
            patient=self.admission.patient, rule__name=rule_name, open_patient__isnull=False
        )
        alert_acknowledge(alert=alert, user=self.nurse, now=at)

    def events(self) -> list[list[Any]]:
        return [
            [round((at - START).total_seconds(), 3), rule, kind]
            for at, rule, kind in AlertEvent.objects.filter(alert__patient=self.admission.patient)
            .order_by("at", "pk")
            .values_list("at", "alert__rule__name", "kind")
        ]


def _run(scenario: dict[str, Any]) -> Bedside:
    bedside = Bedside(scenario)
    actions: list[tuple[float, int, dict[str, Any]]] = []
    for order, step in enumerate(scenario["timeline"]):
        for moment in _moments(step):
            actions.append((moment, order, step))
    for moment, _, step in sorted(actions, key=lambda a: (a[0], a[1])):
        at = START + dt.timedelta(seconds=moment)
        if "readings" in step:
            bedside.post(at, step["readings"], step.get("artifact", []))
        if "acknowledge" in step:
            bedside.acknowledge(at, step["acknowledge"])
        if step.get("tick"):
            alerts_tick(now=at.isoformat())
    return bedside


@pytest.mark.django_db
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_it_produces_exactly_the_expected_alert_transitions(path: Path) -> None:
    scenario = tomllib.loads(path.read_text(encoding="utf-8"))
    bedside = _run(scenario)
    expected = [[float(at), rule, kind] for at, rule, kind in scenario["expected"]]
    assert bedside.events() == expected, scenario["description"]


def test_it_has_scenarios_for_every_behaviour_the_engine_promises() -> None:
    names = {p.stem for p in SCENARIOS}
    for required in (
        "sustain",
        "artifact",
        "hysteresis",
        "latching",
        "acknowledgement",
        "escalation",
        "device_offline",
        "patient_override",
        "news2",
    ):
        assert any(required in name for name in names), f"no scenario for {required}"
