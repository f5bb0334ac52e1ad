"""End to end, once, with real processes: HTTP readings → Redis broker → a real Celery worker
→ an alert row in MariaDB → its event on the ward's channel-layer group."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from alerts.defaults import default_rules_ensure
from alerts.dispatch import evaluation_requests
from alerts.models import Alert, AlertRule
from config.asgi import application
from monitoring.events import ward_event_decode, ward_group_name
from monitoring.services import device_token_issue
from tests import factories
from tests.processes import child_process_environment, post_spo2_series, process_stop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def celery_worker_process() -> Iterator[subprocess.Popen[str]]:
    environment = child_process_environment()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    assert worker.stdout is not None
    for line in worker.stdout:
        if " ready." in line:
            break
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            pytest.fail(f"the Celery worker did not start: {line}")
    # Keep reading its output, so a chatty worker never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in worker.stdout], daemon=True).start()
    try:
        yield worker
    finally:
        process_stop(worker)


def _bedside() -> tuple[str, str, int]:
    default_rules_ensure(AlertRule)
    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward))
    admission.admitted_at = timezone.now() - dt.timedelta(hours=1)
    admission.save(update_fields=["admitted_at"])
    device = factories.device(admission.bed)
    return ward.code, device_token_issue(device=device), admission.patient_id


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_raises_an_alert_through_a_real_worker_and_publishes_it(
    celery_worker_process: subprocess.Popen[str],
) -> None:
    ward_code, token, patient_id = await sync_to_async(_bedside)()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(ward_group_name(ward_code), channel)
    start = timezone.now() - dt.timedelta(seconds=30)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        await post_spo2_series(client, token, start=start, seconds=15, value=84, prefix="e2e")
    await evaluation_requests.flush()

    event = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = await asyncio.wait_for(layer.receive(channel), deadline - time.monotonic())
        if message["type"] == "ward.event" and ward_event_decode(message)["type"] == "alert":
            event = ward_event_decode(message)
            break
    await layer.group_discard(ward_group_name(ward_code), channel)
    assert event is not None, "no alert event reached the ward group"
    assert (event["event"], event["rule"], event["priority"]) == (
        "fired",
        "SpO2 below 90 %",
        "high",
    )
    alert = await sync_to_async(Alert.objects.get)(
        patient_id=patient_id, rule__name="SpO2 below 90 %"
    )
    assert str(alert.public_id) == event["alert"]
    assert alert.fired_at == start + dt.timedelta(seconds=10)
