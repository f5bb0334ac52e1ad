"""Device messages stored in groups (monitoring/writer.py, ``observations_record_group``), on
the real MariaDB: each message gets what it would have got alone, whatever else is in its
group, and a group that cannot commit whole is stored message by message."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.ingestion import DeviceMessage, Reading, message_parse
from monitoring.metrics import INGEST_GROUP_SIZE, INGEST_GROUPS_SPLIT
from monitoring.models import Device, IngestMessage, Observation, token_digest
from monitoring.services import (
    MessageToRecord,
    RecordedMessage,
    RecordOutcome,
    device_token_issue,
    message_digest,
    observations_record_group,
)
from monitoring.writer import GroupWriter, _Waiting, group_writer
from patients.models import Patient
from tests import factories
from tests.config.test_dbthreads import _kill

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Bedside:
    device: Device
    token: str
    patient: Patient


def _bedside(admitted_ago: dt.timedelta = dt.timedelta(hours=1)) -> Bedside:
    admission = factories.admitted_patient(factories.bed(factories.ward()))
    admission.admitted_at = timezone.now() - admitted_ago
    admission.save(update_fields=["admitted_at"])
    device = factories.device(admission.bed)
    return Bedside(device, device_token_issue(device=device), admission.patient)


def _body(message_id: str, *ages_and_values: tuple[float, float]) -> bytes:
    """A heart-rate message: one reading per (seconds ago, value)."""
    now = timezone.now()
    observations = [
        {
            "code": "8867-4",
            "value": value,
            "unit": "/min",
            "observed_at": (now - dt.timedelta(seconds=age)).isoformat(),
        }
        for age, value in ages_and_values
    ]
    return json.dumps({"message_id": message_id, "observations": observations}).encode()


def _item(token: str, body: bytes) -> MessageToRecord:
    now = timezone.now()
    return MessageToRecord(
        token_digest=token_digest(token),
        message=message_parse(body=body, now=now),
        body_digest=message_digest(body),
        now=now,
    )


def _outcomes(items: list[MessageToRecord]) -> list[RecordOutcome]:
    outcomes = observations_record_group(items)
    assert len(outcomes) == len(items)
    for outcome in outcomes:
        assert isinstance(outcome, RecordOutcome), outcome
    return [outcome for outcome in outcomes if isinstance(outcome, RecordOutcome)]


def _splits(reason: str) -> float:
    return INGEST_GROUPS_SPLIT.labels(reason=reason)._value.get()


def _stored(device: Device) -> list[tuple[str, float, int | None]]:
    return sorted(
        Observation.objects.filter(device=device).values_list(
            "message__message_id", "value", "patient_id"
        )
    )


def test_a_group_stores_each_message_in_one_transaction_as_it_would_alone() -> None:
    first, second = _bedside(), _bedside()
    items = [
        _item(first.token, _body("m-1", (3, 71), (2, 72), (1, 73))),
        _item(second.token, _body("m-1", (2, 91), (1, 92))),
        _item(first.token, _body("m-2", (0.5, 74))),
    ]
    splits = _splits("IntegrityError")
    with CaptureQueriesContext(connection) as queries:
        outcomes = _outcomes(items)

    # (an executemany is captured as "6 times: INSERT …")
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT INTO" in q["sql"]]
    assert len(inserts) == 2  # the three messages' rows, then their six readings
    assert _splits("IntegrityError") == splits
    assert [outcome.status for outcome in outcomes] == [201, 201, 201]
    assert [outcome.body for outcome in outcomes] == [
        {"message_id": "m-1", "accepted": 3, "patient": str(first.patient.public_id)},
        {"message_id": "m-1", "accepted": 2, "patient": str(second.patient.public_id)},
        {"message_id": "m-2", "accepted": 1, "patient": str(first.patient.public_id)},
    ]
    for item, outcome, bedside in zip(items, outcomes, (first, second, first), strict=True):
        stored = IngestMessage.objects.get(
            device=bedside.device, message_id=item.message.message_id
        )
        assert outcome.recorded is not None
        assert outcome.recorded.message_pk == stored.pk
        assert outcome.recorded.device_pk == bedside.device.pk
        assert outcome.recorded.ward_code == bedside.device.bed.ward.code
        assert set(outcome.recorded.latest) == {str(bedside.patient.public_id)}
        assert (stored.response, stored.body_digest) == (outcome.body, item.body_digest)
        assert stored.observation_count == len(item.message.readings)
    assert _stored(first.device) == [
        ("m-1", 71.0, first.patient.pk),
        ("m-1", 72.0, first.patient.pk),
        ("m-1", 73.0, first.patient.pk),
        ("m-2", 74.0, first.patient.pk),
    ]
    assert _stored(second.device) == [
        ("m-1", 91.0, second.patient.pk),
        ("m-1", 92.0, second.patient.pk),
    ]
    first.device.refresh_from_db()
    assert first.device.last_seen_at == max(items[0].now, items[2].now)


def test_a_retry_in_a_group_gets_the_original_answer_and_the_others_are_stored() -> None:
    first, second, third = _bedside(), _bedside(), _bedside()
    body = _body("m-1", (1, 71))
    [original] = _outcomes([_item(first.token, body)])  # alone
    splits = _splits("IntegrityError")

    outcomes = _outcomes(
        [
            _item(first.token, body),
            _item(second.token, _body("m-7", (1, 88))),
            _item(third.token, _body("m-8", (1, 66))),
        ]
    )

    # The group was rolled back once; the retry was answered alone, the others went together.
    assert _splits("IntegrityError") == splits + 1
    assert (outcomes[0].status, outcomes[0].body, outcomes[0].recorded) == (
        201,
        original.body,
        None,
    )
    assert [(o.status, o.body["message_id"]) for o in outcomes[1:]] == [(201, "m-7"), (201, "m-8")]
    assert all(o.recorded is not None for o in outcomes[1:])
    assert _stored(first.device) == [("m-1", 71.0, first.patient.pk)]
    assert _stored(second.device) == [("m-7", 88.0, second.patient.pk)]
    assert _stored(third.device) == [("m-8", 66.0, third.patient.pk)]


def test_the_same_message_twice_in_a_group_is_stored_once_and_a_different_body_refused() -> None:
    bedside, other = _bedside(), _bedside()
    body = _body("m-5", (1, 70))
    splits = _splits("IntegrityError")
    outcomes = _outcomes(
        [
            _item(bedside.token, body),
            _item(bedside.token, body),
            _item(other.token, _body("m-5", (1, 80))),
            _item(bedside.token, _body("m-5", (1, 120))),
        ]
    )
    # The repeats were kept out of the group and answered after it: no rollback.
    assert _splits("IntegrityError") == splits
    assert [outcome.status for outcome in outcomes] == [201, 201, 201, 422]
    assert _stored(other.device) == [("m-5", 80.0, other.patient.pk)]
    assert outcomes[0].recorded is not None and outcomes[1].recorded is None
    assert outcomes[1].body == outcomes[0].body
    assert outcomes[3].body["code"] == "message_id_conflict"
    assert _stored(bedside.device) == [("m-5", 70.0, bedside.patient.pk)]


def test_a_group_refuses_unknown_and_deactivated_devices_and_stores_the_others() -> None:
    valid, deactivated = _bedside(), _bedside()
    Device.objects.filter(pk=deactivated.device.pk).update(active=False)
    splits = _splits("IntegrityError")

    outcomes = _outcomes(
        [
            _item("dev_not-a-token", _body("m-1", (1, 70))),
            _item(deactivated.token, _body("m-1", (1, 70))),
            _item(valid.token, _body("m-1", (1, 70))),
        ]
    )

    assert [(o.status, o.body.get("code")) for o in outcomes] == [
        (401, "invalid_credentials"),
        (401, "device_inactive"),
        (201, None),
    ]
    assert _splits("IntegrityError") == splits
    assert _stored(deactivated.device) == []
    assert _stored(valid.device) == [("m-1", 70.0, valid.patient.pk)]


def test_in_a_group_each_reading_goes_to_the_patient_in_its_bed_at_its_time() -> None:
    # The group looks the admissions up over all its readings' times at once; a reading from
    # before its bed's admission must still be stored without a patient.
    recent, earlier = _bedside(dt.timedelta(minutes=1)), _bedside(dt.timedelta(hours=2))
    outcomes = _outcomes(
        [
            _item(recent.token, _body("m-1", (30 * 60, 60), (10, 61))),
            _item(earlier.token, _body("m-1", (30 * 60, 90))),
        ]
    )
    assert outcomes[0].body["unassigned"] == 1
    assert "unassigned" not in outcomes[1].body
    assert _stored(recent.device) == [("m-1", 60.0, None), ("m-1", 61.0, recent.patient.pk)]
    assert _stored(earlier.device) == [("m-1", 90.0, earlier.patient.pk)]


def test_a_group_whose_connection_was_lost_is_stored_message_by_message() -> None:
    first, second = _bedside(), _bedside()
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        _kill(int(cursor.fetchone()[0]))
    splits = _splits("OperationalError")

    outcomes = _outcomes(
        [_item(first.token, _body("m-1", (1, 70))), _item(second.token, _body("m-1", (1, 80)))]
    )

    assert _splits("OperationalError") == splits + 1
    assert [outcome.status for outcome in outcomes] == [201, 201]
    assert _stored(first.device) == [("m-1", 70.0, first.patient.pk)]
    assert _stored(second.device) == [("m-1", 80.0, second.patient.pk)]


@pytest.mark.asyncio
@override_settings(INGEST_WRITE_LANES=1)
async def test_messages_posted_while_the_writer_is_busy_are_grouped_and_all_stored(
    client: httpx.AsyncClient,
) -> None:
    bedsides = [await sync_to_async(_bedside)() for _ in range(4)]
    groups_before = _histogram_count()
    posts = [
        client.post(
            "/api/v1/ingest/",
            content=_body(f"m-{n}", (1, 60 + n)),
            headers={
                "Authorization": f"Device {bedside.token}",
                "Content-Type": "application/json",
            },
        )
        for n in range(5)
        for bedside in bedsides
    ]

    responses = await asyncio.gather(*posts)

    assert [response.status_code for response in responses] == [201] * 20
    # Each answer is its own message's, whatever group it was stored in.
    assert [(r.json()["message_id"], r.json()["patient"]) for r in responses] == [
        (f"m-{n}", str(bedside.patient.public_id)) for n in range(5) for bedside in bedsides
    ]
    groups = _histogram_count() - groups_before
    assert 1 <= groups < 20  # one lane: the messages that waited for it went together
    counts = await sync_to_async(
        lambda: sorted(
            IngestMessage.objects.filter(device__in=[b.device for b in bedsides]).values_list(
                "message_id", flat=True
            )
        )
    )()
    assert counts == sorted(f"m-{n}" for n in range(5) for _ in bedsides)
    stored = await sync_to_async(
        lambda: Observation.objects.filter(device__in=[b.device for b in bedsides]).count()
    )()
    assert stored == 20


def _histogram_count() -> float:
    for metric in INGEST_GROUP_SIZE.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    raise AssertionError("no _count sample")


@pytest.mark.asyncio
@override_settings(INGEST_WRITE_LANES=1)
async def test_a_message_whose_caller_went_away_is_stored_and_followed_up() -> None:
    bedside = await sync_to_async(_bedside)()
    item = await sync_to_async(_item)(bedside.token, _body("m-1", (1, 70)))
    writer = group_writer()
    followed_up: list[RecordedMessage] = []

    caller = asyncio.get_running_loop().create_task(writer.record(item, followed_up.append))
    await asyncio.sleep(0)  # the message is handed over and its group started
    caller.cancel()
    await asyncio.gather(*writer._tasks)

    assert caller.cancelled()
    assert [recorded.readings for recorded in followed_up] == [1]  # live push, evaluation
    assert writer._busy == 0
    stored = await sync_to_async(_stored)(bedside.device)
    assert stored == [("m-1", 70.0, bedside.patient.pk)]


def _waiting(readings: int, loop: asyncio.AbstractEventLoop) -> _Waiting:
    reading = Reading("8867-4", 70.0, "/min", timezone.now(), artifact=False)
    message = DeviceMessage(message_id="m", readings=(reading,) * readings)
    item = MessageToRecord("digest", message, "body", timezone.now())
    return _Waiting(item, loop.create_future(), lambda recorded: None)


def test_a_group_holds_at_most_64_messages_and_2000_readings() -> None:
    loop = asyncio.new_event_loop()
    try:
        writer = GroupWriter()
        writer._waiting.extend(_waiting(1, loop) for _ in range(70))
        assert [len(writer._take()), len(writer._take())] == [64, 6]
        writer._waiting.extend(_waiting(n, loop) for n in (1000, 1000, 1, 1500, 600))
        assert [len(writer._take()) for _ in range(3)] == [2, 2, 1]
        assert not writer._waiting
    finally:
        loop.close()
