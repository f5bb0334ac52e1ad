"""Health, readiness, metrics, request ids, and logs that carry no patient data."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from alerts.defaults import default_rules_ensure
from alerts.models import Alert, AlertRule
from alerts.tasks import evaluate_messages
from monitoring.ingestion import message_parse
from monitoring.models import IngestMessage, token_digest
from monitoring.services import device_token_issue, message_digest, observations_record
from tests import factories

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.mark.django_db
def test_it_says_the_process_is_up() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_it_is_ready_when_database_redis_and_broker_answer() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200
    components = response.json()["components"]
    assert {name: c["status"] for name, c in components.items()} == {
        "database": "ok",
        "channel_layer": "ok",
        "broker": "ok",
    }


@pytest.mark.django_db
def test_it_is_not_ready_when_the_broker_is_down() -> None:
    with override_settings(CELERY_BROKER_URL=UNREACHABLE):
        response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["components"]["broker"]["status"] == "down"
    assert body["components"]["database"]["status"] == "ok"


@pytest.mark.django_db
def test_it_is_not_ready_when_the_channel_layers_redis_is_down() -> None:
    with override_settings(REDIS_URL=UNREACHABLE):
        response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["components"]["channel_layer"]["status"] == "down"


@pytest.mark.django_db
def test_it_shows_metrics_to_an_allowed_address_only() -> None:
    allowed = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert allowed.status_code == 200
    text = allowed.content.decode()
    for name in (
        "portal_ingest_messages_total",
        "portal_ingest_rejected_total",
        "portal_ingest_latency_seconds",
        "portal_open_alerts",
        "portal_open_websockets",
        "portal_catch_up_backlog_messages",
        "portal_alert_evaluation_lag_seconds",
        "portal_celery_task_failures",
    ):
        assert name in text, name
    refused = Client(REMOTE_ADDR="10.20.30.40").get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"


@pytest.mark.django_db
def test_it_shows_metrics_with_the_bearer_token() -> None:
    with override_settings(METRICS_TOKEN="scrape-secret-for-the-test"):
        client = Client(REMOTE_ADDR="10.20.30.40")
        assert client.get("/metrics").status_code == 403
        authorised = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-for-the-test")
    assert authorised.status_code == 200


@pytest.mark.django_db
def test_it_counts_open_alerts_by_priority_in_the_metrics() -> None:
    default_rules_ensure(AlertRule)
    admission = factories.admitted_patient()
    Alert.objects.create(
        patient=admission.patient,
        rule=AlertRule.objects.get(name="SpO2 below 90 %", patient__isnull=True),
        bed=admission.bed,
        priority="high",
        message="m",
        fired_at=timezone.now(),
    )
    text = Client().get("/metrics").content.decode()
    assert 'portal_open_alerts{priority="high"} 1.0' in text


@pytest.mark.django_db
def test_it_echoes_or_assigns_a_request_id() -> None:
    import httpx
    from asgiref.sync import async_to_sync

    from config.asgi import application

    async def call() -> tuple[str, str]:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
            fresh = await client.get("/healthz")
        return given.headers["x-request-id"], fresh.headers["x-request-id"]

    given, fresh = async_to_sync(call)()
    assert given == "abc-123"
    assert len(fresh) == 32


@pytest.mark.django_db
def test_it_logs_no_patient_data_for_ingestion_alerts_and_refusals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    default_rules_ensure(AlertRule)
    patient_fields = {"mrn": "MRN-SECRET-4711", "family_name": "Zebedee", "given_name": "Quintus"}
    admission = factories.admitted_patient(**patient_fields)
    admission.admitted_at = timezone.now() - dt.timedelta(hours=1)
    admission.save(update_fields=["admitted_at"])
    device = factories.device(admission.bed)
    token = device_token_issue(device=device)
    start = timezone.now() - dt.timedelta(seconds=30)
    caplog.set_level(logging.DEBUG)
    for second in range(15):
        at = start + dt.timedelta(seconds=second)
        body = json.dumps(
            {
                "message_id": f"log-{second}",
                "observations": [
                    {"code": "59408-5", "value": 83.7, "unit": "%", "observed_at": at.isoformat()}
                ],
            }
        ).encode()
        observations_record(
            token_digest=token_digest(token),
            message=message_parse(body=body, now=at),
            body_digest=message_digest(body),
            now=at,
        )
    evaluate_messages(message_pks=list(IngestMessage.objects.values_list("pk", flat=True)))
    assert Alert.objects.filter(patient=admission.patient).exists()
    client = Client()
    client.post(
        "/api/v1/ingest/",
        data=b'{"message_id": "x", "observations": [{"code": "8867-4", "value": 999}]}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Device {token}",
    )
    client.force_login(factories.clinician(admission.bed.ward))
    client.get(f"/wards/{admission.bed.ward.code}/")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (*patient_fields.values(), "83.7"):
        assert secret not in logged
