"""Evaluation tasks: idempotent, safe under races, and nothing left unevaluated."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections, connection, transaction
from django.db.transaction import TransactionManagementError
from django.test import override_settings
from django.utils import timezone

from alerts.defaults import default_rules_ensure
from alerts.dispatch import evaluation_requests
from alerts.engine import messages_evaluate
from alerts.engine_sql import messages_claim
from alerts.models import Alert, AlertEvent, AlertRule, News2Score, PatientAlertState
from alerts.services import AlertActionRefused, alert_acknowledge
from alerts.tasks import evaluate_messages, evaluation_catch_up
from config.asgi import application
from monitoring.events import ward_event_decode, ward_group_name
from monitoring.ingestion import message_parse
from monitoring.metrics import EVALUATION_REQUEST_FAILURES
from monitoring.models import IngestMessage, token_digest
from monitoring.services import (
    device_token_issue,
    message_digest,
    observation_enter,
    observations_record,
)
from patients.models import Patient
from patients.services import admission_discharge
from tests import factories
from tests.processes import post_spo2_series


def _bedside():
    default_rules_ensure(AlertRule)
    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward))
    admission.admitted_at = timezone.now() - dt.timedelta(hours=1)
    admission.save(update_fields=["admitted_at"])
    device = factories.device(admission.bed)
    return ward, admission, device, device_token_issue(device=device)


def _post(token: str, message_id: str, at: dt.datetime, spo2: float) -> int:
    return _post_readings(token, message_id, at, [("59408-5", spo2, "%")])


def _post_readings(
    token: str, message_id: str, at: dt.datetime, readings: list[tuple[str, float, str]]
) -> int:
    body = json.dumps(
        {
            "message_id": message_id,
            "observations": [
                {"code": code, "value": value, "unit": unit, "observed_at": at.isoformat()}
                for code, value, unit in readings
            ],
        }
    ).encode()
    outcome = observations_record(
        token_digest=token_digest(token),
        message=message_parse(body=body, now=at),
        body_digest=message_digest(body),
        now=at,
    )
    assert outcome.status == 201
    return IngestMessage.objects.get(message_id=message_id).pk


def _desaturate(token: str, start: dt.datetime, seconds: int = 15) -> list[int]:
    return [_post(token, f"d{i}", start + dt.timedelta(seconds=i), 85) for i in range(seconds)]


@pytest.mark.django_db
def test_it_changes_nothing_when_the_same_evaluation_runs_twice() -> None:
    _, admission, _, token = _bedside()
    start = timezone.now() - dt.timedelta(minutes=1)
    pks = _desaturate(token, start)
    assert evaluate_messages(message_pks=pks) == len(pks)
    snapshot = (
        list(Alert.objects.values_list("pk", "state", "value", "value_at")),
        list(AlertEvent.objects.values_list("pk", "kind", "at")),
        list(News2Score.objects.values_list("pk", "total")),
        PatientAlertState.objects.values("latest", "runs").get(patient=admission.patient),
    )
    assert evaluate_messages(message_pks=pks) == 0
    assert evaluation_catch_up() == 0
    assert (
        list(Alert.objects.values_list("pk", "state", "value", "value_at")),
        list(AlertEvent.objects.values_list("pk", "kind", "at")),
        list(News2Score.objects.values_list("pk", "total")),
        PatientAlertState.objects.values("latest", "runs").get(patient=admission.patient),
    ) == snapshot
    assert (
        Alert.objects.filter(patient=admission.patient, rule__name="SpO2 below 90 %").count() == 1
    )


@pytest.mark.django_db(transaction=True)
def test_it_lets_two_workers_racing_on_one_patient_open_one_alert() -> None:
    _, admission, _, token = _bedside()
    start = timezone.now() - dt.timedelta(minutes=1)
    pks = _desaturate(token, start, seconds=30)
    barrier = threading.Barrier(2)
    outcomes: list[int | BaseException] = []

    def worker(batch: list[int]) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(messages_evaluate(message_pks=batch))
        except BaseException as error:
            outcomes.append(error)
        finally:
            connection.close()

    # Both workers are handed every message (as a retried task and the catch-up would be).
    threads = [threading.Thread(target=worker, args=(pks,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    close_old_connections()
    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert sum(outcomes) == len(pks)  # each message evaluated exactly once
    assert IngestMessage.objects.filter(evaluated_at__isnull=True).count() == 0
    spo2 = Alert.objects.filter(patient=admission.patient, rule__name="SpO2 below 90 %")
    assert spo2.count() == 1
    assert AlertEvent.objects.filter(alert__in=spo2, kind="fired").count() == 1


def _lock_waits() -> int:
    """Other connections blocked in a locking read (MariaDB shows the statement meanwhile)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.processlist"
            " WHERE id <> CONNECTION_ID() AND info LIKE '%FOR UPDATE'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_it_makes_a_second_evaluation_of_a_patient_wait_and_read_the_first_ones_state() -> None:
    # Two workers, different messages of one patient: the second must wait for the first's
    # commit and carry on from the state it wrote. Here 5 s of low SpO2, then 10 s more: only
    # an evaluation that counts the first 5 s fires, at 10 s after the first low reading.
    _, admission, _, token = _bedside()
    start = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=1)
    # A normal reading first, so the patient's state row exists and holds no low run.
    assert messages_evaluate(message_pks=[_post(token, "normal", start, 97)]) == 1
    pks = _desaturate(token, start + dt.timedelta(seconds=1), seconds=15)
    first, second = pks[:5], pks[5:]
    first_evaluated = threading.Event()
    outcomes: dict[str, object] = {}

    def worker(name: str, batch: list[int], hold: bool) -> None:
        try:
            with transaction.atomic():
                outcomes[name] = messages_evaluate(message_pks=batch)
                if hold:  # keep the patient's state locked until the other worker waits on it
                    first_evaluated.set()
                    for _ in range(200):
                        if _lock_waits():
                            break
                        threading.Event().wait(0.05)
                    outcomes["waited"] = _lock_waits() > 0
        except BaseException as error:
            outcomes[name] = error
        finally:
            connection.close()

    holder = threading.Thread(target=worker, args=("first", first, True))
    holder.start()
    assert first_evaluated.wait(timeout=30)
    waiter = threading.Thread(target=worker, args=("second", second, False))
    waiter.start()
    holder.join(timeout=30)
    waiter.join(timeout=30)
    close_old_connections()
    assert outcomes == {"first": len(first), "second": len(second), "waited": True}
    spo2 = Alert.objects.get(patient=admission.patient, rule__name="SpO2 below 90 %")
    assert spo2.fired_at == start + dt.timedelta(seconds=11)  # counted from the first low one


@pytest.mark.django_db(transaction=True)
def test_it_locks_only_the_patients_it_evaluates() -> None:
    # While one evaluation holds patient B's state, an evaluation of A and C must not wait on
    # it: the states are locked through the patient index, not by a locking scan of the
    # table (which InnoDB may plan for a table this small, and which waits on every row).
    tokens = [_bedside()[3] for _ in range(3)]
    start = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=1)
    for n, token in enumerate(tokens):  # every patient's state row exists
        assert messages_evaluate(message_pks=[_post(token, f"first-{n}", start, 97)]) == 1
    later = start + dt.timedelta(seconds=1)
    held = _post(tokens[1], "b", later, 96)
    others = [_post(tokens[0], "a", later, 96), _post(tokens[2], "c", later, 96)]
    holding = threading.Event()
    release = threading.Event()
    outcomes: dict[str, object] = {}

    def hold() -> None:
        try:
            with transaction.atomic():
                outcomes["held"] = messages_evaluate(message_pks=[held])
                holding.set()
                release.wait(timeout=20)
        except BaseException as error:
            outcomes["held"] = error
        finally:
            holding.set()
            connection.close()

    def evaluate_others() -> None:
        try:
            outcomes["others"] = messages_evaluate(message_pks=others)
            outcomes["while_held"] = not release.is_set()
        except BaseException as error:
            outcomes["others"] = error
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(timeout=30)
    other = threading.Thread(target=evaluate_others)
    other.start()
    other.join(timeout=10)  # a worker that waits on B is still waiting now
    release.set()
    other.join(timeout=30)
    holder.join(timeout=30)
    close_old_connections()
    assert outcomes == {"held": 1, "others": 2, "while_held": True}


@pytest.mark.django_db(transaction=True)
def test_it_lets_one_of_two_simultaneous_acknowledgements_win() -> None:
    _, admission, _, token = _bedside()
    evaluate_messages(message_pks=_desaturate(token, timezone.now() - dt.timedelta(minutes=1)))
    alert = Alert.objects.get(patient=admission.patient, rule__name="SpO2 below 90 %")
    nurses = [factories.clinician(), factories.clinician()]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def acknowledge(nurse: object) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(alert_acknowledge(alert=alert, user=nurse))
        except AlertActionRefused as refused:
            outcomes.append(refused)
        finally:
            connection.close()

    threads = [threading.Thread(target=acknowledge, args=(n,)) for n in nurses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    close_old_connections()
    assert sum(isinstance(o, Alert) for o in outcomes) == 1
    assert sum(isinstance(o, AlertActionRefused) for o in outcomes) == 1
    alert.refresh_from_db()
    assert alert.state == Alert.State.ACKNOWLEDGED
    assert alert.acknowledged_by in nurses
    assert AlertEvent.objects.filter(alert=alert, kind="acknowledged").count() == 1


@pytest.mark.django_db
def test_it_refuses_to_acknowledge_an_alert_twice() -> None:
    _, admission, _, token = _bedside()
    evaluate_messages(message_pks=_desaturate(token, timezone.now() - dt.timedelta(minutes=1)))
    alert = Alert.objects.get(patient=admission.patient, rule__name="SpO2 below 90 %")
    nurse = factories.clinician()
    acknowledged = alert_acknowledge(alert=alert, user=nurse)
    assert (acknowledged.acknowledged_by, acknowledged.state) == (nurse, "acknowledged")
    with pytest.raises(AlertActionRefused) as refused:
        alert_acknowledge(alert=alert, user=nurse)
    assert refused.value.code == "not_active"


@pytest.mark.django_db
def test_it_publishes_each_transition_to_the_ward_group_after_commit(
    django_capture_on_commit_callbacks: object,
) -> None:
    ward, admission, _, token = _bedside()
    pks = _desaturate(token, timezone.now() - dt.timedelta(minutes=1))
    layer = get_channel_layer()

    received: list[dict] = []
    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # type: ignore[operator]
        evaluate_messages(message_pks=pks)
        assert not received
    assert callbacks, "transitions are published on commit, not before"

    async def run() -> None:
        channel = await layer.new_channel()
        await layer.group_add(ward_group_name(ward.code), channel)
        for callback in callbacks:
            await asyncio.to_thread(callback)  # as the worker runs them, outside any loop
        received.append(await asyncio.wait_for(layer.receive(channel), 5))
        await layer.group_discard(ward_group_name(ward.code), channel)

    asyncio.run(run())
    [envelope] = received
    assert envelope["type"] == "ward.event"
    event = ward_event_decode(envelope)
    assert event["type"] == "alert"
    assert event["seq"] >= 1
    assert event["event"] == "fired"
    assert event["ward"] == ward.code
    assert event["patient"] == str(admission.patient.public_id)
    assert event["bed"] == str(admission.bed.public_id)
    assert event["priority"] == "high" and event["state"] == "active"
    assert event["value"] == 85.0 and event["unit"] == "%"
    assert event["rule"] == "SpO2 below 90 %"
    assert event["escalation_level"] == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_evaluates_readings_stored_while_the_broker_was_down_once_it_is_back() -> None:
    _, admission, _, token = await sync_to_async(_bedside)()
    unreachable = "redis://127.0.0.1:1/0"
    failures = EVALUATION_REQUEST_FAILURES._value.get()
    start = timezone.now() - dt.timedelta(seconds=40)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        with override_settings(CELERY_TASK_ALWAYS_EAGER=False):
            from config.celery import app

            reachable, app.conf.broker_url = app.conf.broker_url, unreachable
            try:
                await post_spo2_series(
                    client, token, start=start, seconds=15, value=84, prefix="outage"
                )
                assert await evaluation_requests.flush() == 0
            finally:
                app.conf.broker_url = reachable
    assert EVALUATION_REQUEST_FAILURES._value.get() > failures
    pending = sync_to_async(lambda: IngestMessage.objects.filter(evaluated_at__isnull=True).count())
    assert await pending() == 15
    assert not await sync_to_async(Alert.objects.filter(patient=admission.patient).exists)()

    # The broker is back: the beat's catch-up evaluates the backlog, oldest first.
    later = (timezone.now() + dt.timedelta(seconds=30)).isoformat()
    assert await sync_to_async(evaluation_catch_up)(now=later) == 15
    assert await pending() == 0
    fired = await sync_to_async(
        lambda: list(
            Alert.objects.filter(patient=admission.patient).values_list("rule__name", "fired_at")
        )
    )()
    assert [name for name, _ in fired] == ["SpO2 below 90 %"]
    assert fired[0][1] == start + dt.timedelta(seconds=10)  # the reading's time, not the catch-up's


@pytest.mark.django_db(transaction=True)
def test_it_scores_news2_on_the_patients_own_spo2_scale_admitted_or_discharged_since() -> None:
    """Scale 2 (hypercapnic respiratory failure) is the patient's setting, read with the bed
    for an admitted patient and on its own for one discharged after the reading. SpO2 90 then
    86 score 0 then 1 on scale 2 (3 and 3 on scale 1, where the second would write no row)."""
    _, admission, _, token = _bedside()
    Patient.objects.filter(pk=admission.patient_id).update(news2_spo2_scale2=True)
    start = timezone.now() - dt.timedelta(seconds=30)
    admitted = _post(token, "scale-admitted", start, 90)
    assert messages_evaluate(message_pks=[admitted]) == 1
    discharged = _post(token, "scale-discharged", start + dt.timedelta(seconds=1), 86)
    admission_discharge(admission=admission)
    assert messages_evaluate(message_pks=[discharged]) == 1

    scores = list(
        News2Score.objects.filter(patient_id=admission.patient_id)
        .order_by("observed_at")
        .values_list("observed_at", "scale", "total")
    )
    assert scores == [(start, 2, 0), (start + dt.timedelta(seconds=1), 2, 1)]


@pytest.mark.django_db
def test_it_writes_each_news2_parameter_to_the_history_with_the_staff_entered_ones() -> None:
    _, admission, _, token = _bedside()
    at = timezone.now() - dt.timedelta(seconds=20)
    nurse = factories.clinician()
    observation_enter(patient=admission.patient, code="local-supplemental-o2", value=1, user=nurse)
    observation_enter(patient=admission.patient, code="local-acvpu", value=0, user=nurse)
    readings = [
        ("9279-1", 22.0, "/min"),
        ("59408-5", 95.0, "%"),
        ("8480-6", 105.0, "mm[Hg]"),
        ("8867-4", 95.0, "/min"),
        ("8310-5", 38.5, "Cel"),
    ]
    message_pk = _post_readings(token, "full-set", at, readings)
    assert evaluate_messages(message_pks=[message_pk]) == 1

    row = News2Score.objects.get(patient=admission.patient)
    # RR 22: 2; SpO2 95 on scale 1: 1; oxygen: 2; SBP 105: 1; HR 95: 1; alert: 0; 38.5: 1.
    assert (row.total, row.complete, row.scale, row.risk) == (8, True, 1, "high")
    assert [(p["code"], p["value"], p["score"]) for p in row.parameters] == [
        ("9279-1", 22.0, 2),
        ("59408-5", 95.0, 1),
        ("local-supplemental-o2", 1.0, 2),
        ("8480-6", 105.0, 1),
        ("8867-4", 95.0, 1),
        ("local-acvpu", 0.0, 0),
        ("8310-5", 38.5, 1),
    ]
    assert row.observed_at == at


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_claim_messages_outside_a_transaction() -> None:
    # A claim's row locks last only as long as its transaction: outside one they would lock
    # nothing, and two workers could evaluate the same messages.
    with pytest.raises(TransactionManagementError):
        messages_claim(message_pks=[1])
