"""POST /api/v1/ingest/ through the ASGI application, against MariaDB and Redis.

The writer threads hold their own MariaDB connections, so these tests commit for real
(transactional database) rather than hiding inside one test transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import override_settings
from django.utils import timezone

from monitoring.events import ward_event_decode, ward_group_name, ward_vitals
from monitoring.metrics import LIVE_PUSH_FAILURES
from monitoring.models import Device, IngestMessage, Observation
from monitoring.services import device_token_issue, device_token_revoke
from patients.models import Admission, Patient
from patients.services import admission_discharge
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@dataclass
class Bedside:
    device: Device
    token: str
    patient: Patient
    admission: Admission


@pytest.fixture
def bedside() -> Bedside:
    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward))
    admission.admitted_at = timezone.now() - dt.timedelta(hours=1)
    admission.save(update_fields=["admitted_at"])
    device = factories.device(admission.bed)
    return Bedside(device, device_token_issue(device=device), admission.patient, admission)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def reading(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "code": "8867-4",
        "value": 72,
        "unit": "/min",
        "observed_at": _iso(timezone.now() - dt.timedelta(seconds=1)),
    }
    values.update(overrides)
    return values


def message(*readings: dict[str, Any], message_id: str = "m-1") -> dict[str, Any]:
    return {"message_id": message_id, "observations": list(readings) or [reading()]}


async def post(
    client: httpx.AsyncClient,
    token: str | None,
    body: Any,
    *,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Device {token}"
    content = raw if raw is not None else json.dumps(body).encode()
    return await client.post("/api/v1/ingest/", content=content, headers=headers)


count_observations = sync_to_async(lambda **f: Observation.objects.filter(**f).count())
count_messages = sync_to_async(lambda **f: IngestMessage.objects.filter(**f).count())


async def test_it_stores_a_message_and_answers_201_after_commit(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    body = message(
        reading(),
        reading(code="59408-5", value=97, unit="%"),
        reading(code="8310-5", value=36.8, unit="Cel"),
    )
    response = await post(client, bedside.token, body)
    assert response.status_code == 201
    assert response.json() == {
        "message_id": "m-1",
        "accepted": 3,
        "patient": str(bedside.patient.public_id),
    }
    stored = await sync_to_async(
        lambda: sorted(
            Observation.objects.filter(device=bedside.device).values_list(
                "code", "value", "unit", "patient_id"
            )
        )
    )()
    assert stored == [
        ("59408-5", 97.0, "%", bedside.patient.pk),
        ("8310-5", 36.8, "Cel", bedside.patient.pk),
        ("8867-4", 72.0, "/min", bedside.patient.pk),
    ]


async def test_it_leaves_the_evaluation_marker_on_every_stored_message(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    assert (await post(client, bedside.token, message())).status_code == 201
    assert await count_messages(device=bedside.device, evaluated_at__isnull=True) == 1


async def test_it_converts_fahrenheit_to_celsius(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    body = message(reading(code="8310-5", value=98.6, unit="[degF]"))
    assert (await post(client, bedside.token, body)).status_code == 201
    stored = await sync_to_async(Observation.objects.get)(device=bedside.device)
    assert (stored.value, stored.unit) == (37.0, "Cel")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"observations": [reading()]}, "missing_message_id", "message_id"),
        ({"message_id": "", "observations": [reading()]}, "invalid_message_id", "message_id"),
        ({"message_id": 12, "observations": [reading()]}, "invalid_message_id", "message_id"),
        (
            {"message_id": "x" * 256, "observations": [reading()]},
            "invalid_message_id",
            "message_id",
        ),
        ({"message_id": "m"}, "missing_observations", "observations"),
        ({"message_id": "m", "observations": []}, "invalid_observations", "observations"),
        (
            {"message_id": "m", "observations": [reading()] * 1001},
            "too_many_observations",
            "observations",
        ),
        ({"message_id": "m", "observations": [reading()], "extra": 1}, "unknown_field", "extra"),
        (message(reading(code="1234-5")), "unknown_code", "observations[0].code"),
        (
            message(reading(code="local-acvpu", unit="{score}", value=0)),
            "unknown_code",
            "observations[0].code",
        ),
        (message(reading(unit="bpm")), "invalid_unit", "observations[0].unit"),
        (message(reading(value="72")), "invalid_value", "observations[0].value"),
        (message(reading(value=True)), "invalid_value", "observations[0].value"),
        (message(reading(value=None)), "invalid_value", "observations[0].value"),
        (message(reading(value=351)), "implausible_value", "observations[0].value"),
        (message(reading(value=-1)), "implausible_value", "observations[0].value"),
        (
            message(reading(code="59408-5", unit="%", value=100.5)),
            "implausible_value",
            "observations[0].value",
        ),
        (message(reading(observed_at=None)), "invalid_observed_at", "observations[0].observed_at"),
        (
            message({"code": "8867-4", "value": 72, "unit": "/min"}),
            "missing_field",
            "observations[0].observed_at",
        ),
        (
            message(reading(observed_at="yesterday")),
            "invalid_observed_at",
            "observations[0].observed_at",
        ),
        (
            message(reading(observed_at="2026-11-21T10:00:00")),
            "observed_at_without_offset",
            "observations[0].observed_at",
        ),
        (
            message(reading(observed_at="1970-01-01T00:00:00Z")),
            "observed_at_implausible",
            "observations[0].observed_at",
        ),
        (message(reading(artifact="yes")), "invalid_artifact", "observations[0].artifact"),
        (message(reading(), reading(colour="red")), "unknown_field", "observations[1].colour"),
        (message(reading(), 7), "invalid_observation", None),
    ],
)
async def test_it_rejects_an_invalid_message_with_a_clear_400(
    client: httpx.AsyncClient, bedside: Bedside, body: Any, code: str, field: str | None
) -> None:
    response = await post(client, bedside.token, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == code
    assert answer["detail"]
    assert answer.get("field") == field
    assert await count_observations() == 0
    assert await count_messages() == 0


async def test_it_rejects_a_reading_from_the_future(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    future = _iso(timezone.now() + dt.timedelta(minutes=3))
    response = await post(client, bedside.token, message(reading(observed_at=future)))
    assert response.status_code == 400
    assert response.json()["code"] == "observed_at_in_future"
    slightly_ahead = _iso(timezone.now() + dt.timedelta(seconds=60))
    assert (
        await post(client, bedside.token, message(reading(observed_at=slightly_ahead)))
    ).status_code == 201


async def test_it_names_the_index_of_the_bad_observation_and_stores_nothing(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    body = message(reading(), reading(value=72.5), reading(code="59408-5", value=97, unit="/min"))
    response = await post(client, bedside.token, body)
    assert response.status_code == 400
    assert response.json()["index"] == 2
    assert response.json()["field"] == "observations[2].unit"
    assert await count_observations() == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_json"),
        (b'{"message_id": "m", "observations": [{"value": NaN}]}', "malformed_json"),
        (b"\xff\xfe{}", "invalid_encoding"),
        (b"[1, 2]", "invalid_body"),
        (
            b'{"message_id": "\\ud800", "observations": [{"code": "8867-4", "value": 70,'
            b' "unit": "/min", "observed_at": "2026-01-01T00:00:00Z"}]}',
            "invalid_message_id",
        ),
        # A valid JSON number that overflows to infinity is not a reading.
        (
            b'{"message_id": "m", "observations": [{"code": "8867-4", "value": 1e400,'
            b' "unit": "/min", "observed_at": "2026-01-01T00:00:00Z"}]}',
            "invalid_value",
        ),
    ],
)
async def test_it_rejects_a_body_that_is_not_a_json_object(
    client: httpx.AsyncClient, bedside: Bedside, raw: bytes, code: str
) -> None:
    response = await post(client, bedside.token, None, raw=raw)
    assert response.status_code == 400
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("", 415),
        ("application/json-seq", 415),
        ("application/json; charset=latin-1", 415),
        ('application/json; charset="iso-8859-1"', 415),
        ("application/json", 201),
        ("Application/JSON", 201),
        ("application/json; charset=UTF-8", 201),
        ('application/json ; charset="utf8"', 201),
    ],
)
async def test_it_takes_only_json_in_utf_8(
    client: httpx.AsyncClient, bedside: Bedside, content_type: str, status: int
) -> None:
    response = await post(client, bedside.token, message(), content_type=content_type)
    assert response.status_code == status
    if status == 415:
        assert response.json()["code"] == "unsupported_media_type"
        assert await count_messages() == 0


async def test_it_answers_413_to_a_body_over_one_mebibyte(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    raw = b'{"message_id": "m", "padding": "' + b"x" * (1024 * 1024) + b'"}'
    response = await post(client, bedside.token, None, raw=raw)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_it_answers_405_to_other_methods(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ingest/")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_credentials"),
        ("Bearer something", "missing_credentials"),
        ("Device ", "missing_credentials"),
        ("Device dev_not-a-real-token", "invalid_credentials"),
    ],
)
async def test_it_refuses_a_missing_or_unknown_credential(
    client: httpx.AsyncClient, bedside: Bedside, authorization: str | None, code: str
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await client.post("/api/v1/ingest/", json=message(), headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Device")
    assert await count_observations() == 0


async def test_it_refuses_a_rotated_or_revoked_token(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    new_token = await sync_to_async(device_token_issue)(device=bedside.device)
    old = await post(client, bedside.token, message())
    assert old.status_code == 401
    assert (await post(client, new_token, message())).status_code == 201
    await sync_to_async(device_token_revoke)(device=bedside.device)
    revoked = await post(client, new_token, message(message_id="m-2"))
    assert revoked.status_code == 401
    assert revoked.json()["code"] == "invalid_credentials"


async def test_it_refuses_an_inactive_device(client: httpx.AsyncClient, bedside: Bedside) -> None:
    await sync_to_async(Device.objects.filter(pk=bedside.device.pk).update)(active=False)
    response = await post(client, bedside.token, message())
    assert response.status_code == 401
    assert response.json()["code"] == "device_inactive"


async def test_it_authenticates_before_explaining_a_bad_body(client: httpx.AsyncClient) -> None:
    response = await post(client, "dev_unknown", {"message_id": 5})
    assert response.status_code == 401


async def test_it_replays_the_original_response_to_a_retry_and_stores_once(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    body = message(reading(), reading(code="59408-5", value=96, unit="%"))
    first = await post(client, bedside.token, body)
    again = await post(client, bedside.token, body)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert await count_observations() == 2
    assert await count_messages() == 1


async def test_it_refuses_a_used_message_id_with_a_different_body(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    assert (await post(client, bedside.token, message(reading(value=70)))).status_code == 201
    response = await post(client, bedside.token, message(reading(value=71)))
    assert response.status_code == 422
    assert response.json()["code"] == "message_id_conflict"
    assert await count_observations() == 1


async def test_it_scopes_message_ids_to_their_device(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    other = await sync_to_async(factories.device)()
    other_token = await sync_to_async(device_token_issue)(device=other)
    assert (await post(client, bedside.token, message())).status_code == 201
    assert (await post(client, other_token, message())).status_code == 201
    assert await count_messages() == 2


async def test_it_stores_two_simultaneous_identical_requests_once(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    body = message(*(reading(value=60 + i) for i in range(50)), message_id="same")
    responses = await asyncio.gather(*(post(client, bedside.token, body) for _ in range(4)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert await count_observations() == 50
    assert await count_messages() == 1


async def test_it_keeps_readings_of_a_device_without_a_bed(client: httpx.AsyncClient) -> None:
    device = await sync_to_async(factories.device)()
    token = await sync_to_async(device_token_issue)(device=device)
    response = await post(client, token, message(reading(), reading(value=80)))
    assert response.status_code == 201
    answer = response.json()
    assert answer["patient"] is None
    assert answer["unassigned"] == 2
    assert "without a patient" in answer["warning"]
    assert await count_observations(device=device, patient__isnull=True) == 2


async def test_it_attaches_each_reading_to_the_patient_in_the_bed_at_observed_at(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    """A reading from before the admission belongs to nobody; one during it to the patient."""
    before = _iso(bedside.admission.admitted_at - dt.timedelta(minutes=5))
    during = _iso(timezone.now() - dt.timedelta(seconds=10))
    response = await post(
        client, bedside.token, message(reading(observed_at=before), reading(observed_at=during))
    )
    assert response.status_code == 201
    assert response.json()["patient"] == str(bedside.patient.public_id)
    assert response.json()["unassigned"] == 1
    discharged_at = timezone.now() - dt.timedelta(seconds=5)
    await sync_to_async(admission_discharge)(admission=bedside.admission, at=discharged_at)
    later = await post(client, bedside.token, message(reading(), message_id="m-2"))
    assert later.json()["patient"] is None
    assert await count_observations(patient=bedside.patient) == 1


async def test_it_keeps_last_seen_current_without_an_update_per_message(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    assert (await post(client, bedside.token, message(message_id="a"))).status_code == 201
    first_seen = (await sync_to_async(Device.objects.get)(pk=bedside.device.pk)).last_seen_at
    assert first_seen is not None
    assert (await post(client, bedside.token, message(message_id="b"))).status_code == 201
    second_seen = (await sync_to_async(Device.objects.get)(pk=bedside.device.pk)).last_seen_at
    assert second_seen == first_seen  # within the 5 s resolution: no extra UPDATE


async def test_it_rate_limits_a_flooding_device_with_retry_after(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    statuses = []
    for n in range(40):
        response = await post(client, bedside.token, message(message_id=f"flood-{n}"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["code"] == "rate_limited"
    assert statuses[:30] == [201] * 30  # the burst allowance, then the sustained rate
    assert 429 in statuses
    assert await count_messages() == statuses.count(201)


async def _vitals_event_after(
    client: httpx.AsyncClient, bedside: Bedside, *bodies: dict[str, Any]
) -> dict[str, Any]:
    """Post ``bodies`` (each acknowledged), flush the vitals tick and return the one ward event
    the ward's group received, decoded."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    ward_code = await sync_to_async(lambda: bedside.admission.bed.ward.code)()
    await layer.group_add(ward_group_name(ward_code), channel)
    try:
        for body in bodies:
            assert (await post(client, bedside.token, body)).status_code == 201
        assert await ward_vitals.flush() == 1
        received = await asyncio.wait_for(layer.receive(channel), 5)
    finally:
        await layer.group_discard(ward_group_name(ward_code), channel)
    assert received["type"] == "ward.event"
    event = ward_event_decode(received)
    assert event["type"] == "vitals"
    assert event["ward"] == ward_code
    return event


async def test_it_pushes_the_newest_values_to_the_ward_group(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    old = _iso(timezone.now() - dt.timedelta(seconds=3))
    event = await _vitals_event_after(
        client, bedside, message(reading(value=70, observed_at=old), reading(value=75))
    )
    assert event["seq"] >= 1
    [entry] = event["beds"]
    assert entry["patient"] == str(bedside.patient.public_id)
    assert entry["bed"] == str(bedside.admission.bed.public_id)
    assert entry["vitals"]["8867-4"][0] == 75.0
    assert "artifact" not in entry


async def test_a_vitals_frame_groups_a_beds_newest_values_in_canonical_units(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    taken = (timezone.now() - dt.timedelta(seconds=2)).replace(microsecond=123456)
    older = taken - dt.timedelta(seconds=1)
    first = message(
        reading(value=80, observed_at=_iso(taken)),
        reading(code="59408-5", value=88, unit="%", observed_at=_iso(taken), artifact=True),
        message_id="m-1",
    )
    late = message(  # arrives after the first but was taken before it: not newer
        reading(value=60, observed_at=_iso(older)),
        reading(code="8310-5", value=98.6, unit="[degF]", observed_at=_iso(older)),
        message_id="m-2",
    )
    event = await _vitals_event_after(client, bedside, first, late)
    [entry] = event["beds"]  # one entry for the bed, however many messages and codes
    taken_ms = int(taken.timestamp()) * 1000 + 123
    older_ms = taken_ms - 1000
    assert entry["vitals"]["8867-4"] == [80.0, taken_ms]  # the newest, not the last to arrive
    assert entry["vitals"]["59408-5"] == [88.0, taken_ms]
    temperature, at = entry["vitals"]["8310-5"]
    assert temperature == pytest.approx(37.0) and at == older_ms  # stored and sent in Cel
    assert entry["artifact"] == ["59408-5"]


async def test_it_acknowledges_and_stores_when_redis_is_unreachable(
    client: httpx.AsyncClient, bedside: Bedside
) -> None:
    unreachable = "redis://127.0.0.1:1/0"
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [unreachable]},
        }
    }
    failures_before = LIVE_PUSH_FAILURES._value.get()
    with override_settings(CHANNEL_LAYERS=layers, CELERY_BROKER_URL=unreachable):
        response = await post(client, bedside.token, message(reading(), reading(value=90)))
        assert response.status_code == 201
        assert await ward_vitals.flush() == 0
    assert LIVE_PUSH_FAILURES._value.get() == failures_before + 1
    assert await count_observations(patient=bedside.patient) == 2
    # The durable marker: the catch-up will evaluate this message once the broker is back.
    assert await count_messages(device=bedside.device, evaluated_at__isnull=True) == 1
