"""The ward dashboard WebSocket through config.asgi.application and the real Redis layer."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from autobahn.exception import Disconnected
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import timezone

from alerts.defaults import default_rules_ensure
from alerts.models import Alert, AlertEvent, AlertRule
from config.asgi import application
from monitoring import wardlog
from monitoring.events import ward_event_send, ward_group_name
from patients.models import WardAccess
from portal.consumers import PROTOCOL, WardConsumer
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@asynccontextmanager
async def dashboard(
    ward_code: str,
    user: Any = None,
    *,
    origin: str = "http://localhost",
    query: str = "",
    protocol: str | None = PROTOCOL,
) -> AsyncIterator[tuple[WebsocketCommunicator, bool, Any]]:
    headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
    if user is not None:
        cookie = await sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    # ``query``: "" or "?last_seq=…"; the page's protocol version goes first (None: no version,
    # as pages served before versions existed)
    if protocol is not None:
        query = f"?protocol={protocol}" + query.replace("?", "&", 1)
    communicator = WebsocketCommunicator(
        application, f"/ws/wards/{ward_code}/{query}", headers=headers
    )
    connected, code = await communicator.connect(timeout=10)
    try:
        yield communicator, connected, code
    finally:
        await communicator.disconnect()


async def _closed_with(communicator: WebsocketCommunicator) -> tuple[dict[str, Any], int]:
    notice = await communicator.receive_json_from(timeout=5)
    closing = await communicator.receive_output(timeout=5)
    assert closing["type"] == "websocket.close"
    return notice, closing["code"]


@pytest.fixture
def ward_with_patient() -> dict[str, Any]:
    default_rules_ensure(AlertRule)
    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward, label="Bed 01"))
    factories.bed(ward, label="Bed 02")
    device = factories.device(admission.bed)
    return {
        "ward": ward,
        "admission": admission,
        "device": device,
        "nurse": factories.clinician(ward),
    }


async def test_it_closes_an_anonymous_socket_with_4401() -> None:
    ward = await sync_to_async(factories.ward)()
    async with dashboard(ward.code) as (communicator, connected, _):
        assert connected
        notice, code = await _closed_with(communicator)
    assert (notice["type"], code) == ("session_ended", 4401)


async def test_it_closes_a_socket_for_another_ward_with_4403(ward_with_patient: dict) -> None:
    other = await sync_to_async(factories.clinician)(await sync_to_async(factories.ward)())
    async with dashboard(ward_with_patient["ward"].code, other) as (communicator, _, _):
        notice, code = await _closed_with(communicator)
    assert (notice["type"], code) == ("access_revoked", 4403)


async def test_it_closes_a_socket_for_an_unknown_ward_with_4404(ward_with_patient: dict) -> None:
    async with dashboard("no-such-ward", ward_with_patient["nurse"]) as (communicator, _, _):
        notice, code = await _closed_with(communicator)
    assert (notice["type"], code) == ("unknown_ward", 4404)


@pytest.mark.parametrize(("protocol", "query"), [(None, ""), (None, "?last_seq=5"), ("1", "")])
async def test_it_closes_a_page_from_before_the_protocol_changed_with_4426(
    ward_with_patient: dict, protocol: str | None, query: str
) -> None:
    # A screen left open through an upgrade would misread the frames: it is told to reload,
    # before it is sent any ward data.
    ward, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    async with dashboard(ward, nurse, query=query, protocol=protocol) as (communicator, ok, _):
        assert ok
        notice, code = await _closed_with(communicator)
    assert (notice["type"], code) == ("outdated", 4426)


async def test_it_refuses_a_socket_from_a_foreign_origin(ward_with_patient: dict) -> None:
    async with dashboard(
        ward_with_patient["ward"].code, ward_with_patient["nurse"], origin="http://evil.example"
    ) as (_, connected, _):
        assert not connected


async def test_it_sends_a_clinician_a_snapshot_of_their_ward(ward_with_patient: dict) -> None:
    admission = ward_with_patient["admission"]
    now = timezone.now()
    await sync_to_async(_reading)(ward_with_patient, "8867-4", 71.0, now - dt.timedelta(seconds=9))
    await sync_to_async(_reading)(ward_with_patient, "8867-4", 73.0, now - dt.timedelta(seconds=2))
    await sync_to_async(_reading)(ward_with_patient, "59408-5", 96.0, now - dt.timedelta(seconds=2))
    alert = await sync_to_async(_alert)(ward_with_patient)
    async with dashboard(ward_with_patient["ward"].code, ward_with_patient["nurse"]) as (
        communicator,
        _,
        _,
    ):
        snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    assert isinstance(snapshot["seq"], int)
    assert snapshot["ward"]["code"] == ward_with_patient["ward"].code
    occupied, empty = snapshot["beds"]
    assert (occupied["label"], empty["label"]) == ("Bed 01", "Bed 02")
    assert occupied["patient"]["mrn"] == admission.patient.mrn
    assert occupied["vitals"]["8867-4"]["value"] == 73.0
    assert occupied["vitals"]["59408-5"]["value"] == 96.0
    heart_rate_line = occupied["sparklines"]["8867-4"]
    assert 1 <= len(heart_rate_line) <= 2  # 10 s buckets of the last 15 minutes
    assert {value for _, value in heart_rate_line} <= {71.0, 72.0, 73.0}
    assert [a["alert"] for a in occupied["alerts"]] == [str(alert.public_id)]
    assert occupied["alerts"][0]["priority"] == "high"
    assert occupied["devices"][0]["serial"] == ward_with_patient["device"].serial
    assert empty["patient"] is None and empty["alerts"] == []


async def test_it_sends_an_administrator_any_ward(ward_with_patient: dict) -> None:
    administrator = await sync_to_async(factories.administrator)()
    async with dashboard(ward_with_patient["ward"].code, administrator) as (communicator, _, _):
        assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"


async def test_it_relays_numbered_ward_events_in_order(ward_with_patient: dict) -> None:
    code = ward_with_patient["ward"].code
    async with dashboard(code, ward_with_patient["nurse"]) as (communicator, _, _):
        snapshot = await communicator.receive_json_from(timeout=5)
        first = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
        second = await ward_event_send(code, {"type": "alert", "ward": code, "alert": "x"})
        received = [await communicator.receive_json_from(timeout=5) for _ in range(2)]
    assert [e["type"] for e in received] == ["vitals", "alert"]
    assert (
        [e["seq"] for e in received]
        == [first, second]
        == [
            snapshot["seq"] + 1,
            snapshot["seq"] + 2,
        ]
    )


def _redis_subscribers(pattern: str) -> int:
    """Subscribers in Redis of the pub/sub channels whose names match ``pattern``."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        channels = client.pubsub_channels(pattern)
        return sum(count for _, count in client.pubsub_numsub(*channels)) if channels else 0
    finally:
        client.close()


async def test_dashboards_of_a_ward_share_one_subscription_per_process(
    ward_with_patient: dict,
) -> None:
    """A dashboard opening or closing costs Redis nothing unless it is the ward's first or last
    in this process (portal.hub): that is what keeps a reconnect storm cheap."""
    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    colleague = await sync_to_async(factories.clinician)(ward_with_patient["ward"])
    pattern = f"*{ward_group_name(code)}"
    async with dashboard(code, nurse) as (mine, _, _):
        await mine.receive_json_from(timeout=5)
        async with dashboard(code, colleague) as (theirs, _, _):
            await theirs.receive_json_from(timeout=5)
            assert await sync_to_async(_redis_subscribers)(pattern) == 1
            seq = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
            assert (await mine.receive_json_from(timeout=5))["seq"] == seq
            assert (await theirs.receive_json_from(timeout=5))["seq"] == seq
        # The colleague closed: this dashboard still gets the ward's events.
        assert await sync_to_async(_redis_subscribers)(pattern) == 1
        seq = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
        assert (await mine.receive_json_from(timeout=5))["seq"] == seq
    assert await sync_to_async(_redis_subscribers)(pattern) == 0


async def test_it_replays_what_a_reconnecting_client_missed(ward_with_patient: dict) -> None:
    code = ward_with_patient["ward"].code
    nurse = ward_with_patient["nurse"]
    async with dashboard(code, nurse) as (communicator, _, _):
        last_seq = (await communicator.receive_json_from(timeout=5))["seq"]
    missed = [
        await ward_event_send(code, {"type": "vitals", "ward": code, "beds": [], "n": n})
        for n in range(3)
    ]
    async with dashboard(code, nurse, query=f"?last_seq={last_seq}") as (communicator, _, _):
        replay = await communicator.receive_json_from(timeout=5)
    assert replay["type"] == "replay"
    assert replay["from_seq"] == last_seq + 1
    assert [e["seq"] for e in replay["events"]] == missed
    assert [e["n"] for e in replay["events"]] == [0, 1, 2]


@pytest.mark.parametrize("published", ["after the log was read", "before the log was read"])
async def test_an_event_published_during_a_catch_up_reaches_the_client_once_and_in_order(
    ward_with_patient: dict, monkeypatch: pytest.MonkeyPatch, published: str
) -> None:
    """An event published while a reconnecting socket is being caught up: the socket is in
    the ward's group already, so it arrives through the hub while the replay is still being
    prepared. Sent after the replay when the replay lacks it, dropped when the replay has it."""
    code = ward_with_patient["ward"].code
    nurse = ward_with_patient["nurse"]
    async with dashboard(code, nurse) as (communicator, _, _):
        last_seq = (await communicator.receive_json_from(timeout=5))["seq"]
    missed = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
    read_log = wardlog.async_ward_log.since
    during: list[int | None] = []

    async def publish() -> None:
        during.append(
            await ward_event_send(code, {"type": "vitals", "ward": code, "beds": [], "n": 1})
        )
        await asyncio.sleep(0.3)  # the hub receives it while this catch-up is unfinished

    async def since(ward_code: str, after: int) -> wardlog.Backlog:
        if published == "before the log was read":
            await publish()
        backlog = await read_log(ward_code, after)
        if published == "after the log was read":
            await publish()
        return backlog

    monkeypatch.setattr(wardlog.async_ward_log, "since", since)
    async with dashboard(code, nurse, query=f"?last_seq={last_seq}") as (communicator, _, _):
        replay = await communicator.receive_json_from(timeout=5)
        monkeypatch.setattr(wardlog.async_ward_log, "since", read_log)
        after = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
        received = []
        while not await communicator.receive_nothing(timeout=1):
            received.append((await communicator.receive_json_from(timeout=5))["seq"])
    [event_during] = during
    assert replay["type"] == "replay"
    if published == "after the log was read":
        assert [e["seq"] for e in replay["events"]] == [missed]
        assert received == [event_during, after]
    else:
        assert [e["seq"] for e in replay["events"]] == [missed, event_during]
        assert received == [after]  # not the event a second time


async def test_it_sends_a_snapshot_when_the_missed_events_are_gone(
    ward_with_patient: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = ward_with_patient["ward"].code
    monkeypatch.setattr(wardlog, "LOG_LENGTH", 2)
    first = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
    for _ in range(3):
        await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
    assert first is not None
    query = f"?last_seq={first}"
    async with dashboard(code, ward_with_patient["nurse"], query=query) as (communicator, _, _):
        answer = await communicator.receive_json_from(timeout=5)
    assert answer["type"] == "snapshot"
    assert answer["seq"] == first + 3


async def test_it_acknowledges_over_the_socket_and_tells_every_dashboard(
    ward_with_patient: dict,
) -> None:
    alert = await sync_to_async(_alert)(ward_with_patient)
    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    colleague = await sync_to_async(factories.clinician)(ward_with_patient["ward"])
    async with dashboard(code, nurse) as (mine, _, _), dashboard(code, colleague) as (theirs, _, _):
        await mine.receive_json_from(timeout=5)
        await theirs.receive_json_from(timeout=5)
        await mine.send_json_to({"type": "acknowledge", "alert": str(alert.public_id)})
        answers = [await mine.receive_json_from(timeout=5) for _ in range(2)]
        seen = await theirs.receive_json_from(timeout=5)
        await mine.send_json_to({"type": "acknowledge", "alert": str(alert.public_id)})
        again = await mine.receive_json_from(timeout=5)
    by_type = {a["type"]: a for a in answers}
    assert by_type["ack_result"] == {
        "type": "ack_result",
        "alert": str(alert.public_id),
        "ok": True,
    }
    for event in (by_type["alert"], seen):
        assert (event["event"], event["state"], event["alert"]) == (
            "acknowledged",
            "acknowledged",
            str(alert.public_id),
        )
    assert again["ok"] is False and again["code"] == "not_active"
    event = await sync_to_async(AlertEvent.objects.get)(alert=alert, kind="acknowledged")
    assert event.by_id == nurse.pk


async def test_it_closes_the_socket_when_the_ward_is_revoked(ward_with_patient: dict) -> None:
    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    async with dashboard(code, nurse) as (communicator, _, _):
        await communicator.receive_json_from(timeout=5)
        await sync_to_async(WardAccess.objects.filter(user=nurse).delete)()
        notice, close_code = await _closed_with(communicator)
    assert (notice["type"], close_code) == ("access_revoked", 4403)


async def test_it_closes_the_socket_when_the_account_is_deactivated(
    ward_with_patient: dict,
) -> None:
    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    async with dashboard(code, nurse) as (communicator, _, _):
        await communicator.receive_json_from(timeout=5)

        def deactivate() -> None:
            nurse.is_active = False
            nurse.save(update_fields=["is_active"])

        await sync_to_async(deactivate)()
        notice, close_code = await _closed_with(communicator)
    assert (notice["type"], close_code) == ("access_revoked", 4403)


async def test_it_closes_the_socket_when_the_user_logs_out(ward_with_patient: dict) -> None:
    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    cookie = await sync_to_async(_session_cookie)(nurse)
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    communicator = WebsocketCommunicator(
        application, f"/ws/wards/{code}/?protocol={PROTOCOL}", headers=headers
    )
    await communicator.connect(timeout=10)
    try:
        await communicator.receive_json_from(timeout=5)

        def log_out() -> None:
            client = Client()
            client.cookies[settings.SESSION_COOKIE_NAME] = cookie
            assert client.post("/accounts/logout/").status_code == 302

        await sync_to_async(log_out)()
        notice, close_code = await _closed_with(communicator)
    finally:
        await communicator.disconnect()
    assert (notice["type"], close_code) == ("session_ended", 4401)


def _reading(context: dict, code: str, value: float, at: dt.datetime) -> None:
    from monitoring.models import Observation
    from monitoring.vitals import VITALS

    Observation.objects.create(
        device=context["device"],
        patient=context["admission"].patient,
        code=code,
        value=value,
        unit=VITALS[code].unit,
        observed_at=at,
        received_at=at,
    )


def _alert(context: dict) -> Alert:
    admission = context["admission"]
    return Alert.objects.create(
        patient=admission.patient,
        rule=AlertRule.objects.get(name="SpO2 below 90 %", patient__isnull=True),
        bed=admission.bed,
        priority="high",
        latching=True,
        message="SpO2 85 % below 90 %",
        code="59408-5",
        value=85.0,
        unit="%",
        fired_at=timezone.now(),
    )


async def test_it_records_a_dashboard_subscription_in_the_access_log(
    ward_with_patient: dict,
) -> None:
    from patients.models import AccessLog

    nurse = ward_with_patient["nurse"]
    async with dashboard(ward_with_patient["ward"].code, nurse) as (communicator, _, _):
        await communicator.receive_json_from(timeout=5)
    rows = await sync_to_async(
        lambda: list(AccessLog.objects.filter(user=nurse).values_list("action", "patient_id"))
    )()
    assert rows == [("dashboard.subscribe", ward_with_patient["admission"].patient_id)]


async def test_it_shares_a_fresh_snapshot_and_replays_what_came_after_it(
    ward_with_patient: dict,
) -> None:
    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    async with dashboard(code, nurse) as (first, _, _):
        snapshot = await first.receive_json_from(timeout=5)
    newer = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
    async with dashboard(code, nurse) as (second, _, _):
        shared = await second.receive_json_from(timeout=5)
        replay = await second.receive_json_from(timeout=5)
    assert shared["type"] == "snapshot" and shared["seq"] == snapshot["seq"]
    assert replay["type"] == "replay"
    assert [event["seq"] for event in replay["events"]] == [newer]


async def test_it_sends_a_snapshot_rather_than_a_long_replay(
    ward_with_patient: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal import consumers

    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    monkeypatch.setattr(consumers, "MAX_REPLAY_EVENTS", 2)
    async with dashboard(code, nurse) as (communicator, _, _):
        last_seq = (await communicator.receive_json_from(timeout=5))["seq"]
    for _ in range(3):
        await ward_event_send(code, {"type": "vitals", "ward": code, "beds": []})
    query = f"?last_seq={last_seq}"
    async with dashboard(code, nurse, query=query) as (communicator, _, _):
        answer = await communicator.receive_json_from(timeout=5)
        assert answer["type"] == "snapshot"
        reached = answer["seq"]
        if reached < last_seq + 3:  # a shared snapshot is followed by what came after it
            catch_up = await communicator.receive_json_from(timeout=5)
            assert catch_up["type"] == "replay"
            reached = catch_up["events"][-1]["seq"]
    assert reached == last_seq + 3


async def test_a_frame_for_a_connection_already_gone_is_dropped_without_an_error() -> None:
    # daphne raises autobahn's Disconnected when a frame is sent on a connection that dropped
    # before its disconnect reached the consumer (every dashboard at once in a network blip).
    # Here ``send`` is what daphne's is then: the frame is dropped, the consumer stops sending,
    # and nothing is raised to the hub (which would log an error per frame and socket).
    consumer = WardConsumer()
    consumer.closing, consumer.sent_seq, consumer.acknowledged_seq = False, 0, 0
    consumer.held = None
    sent: list[dict[str, Any]] = []

    async def gone(message: dict[str, Any]) -> None:
        sent.append(message)
        raise Disconnected("Attempt to send on a closed protocol")

    consumer.base_send = gone
    await consumer.deliver({"type": "ward.event", "seq": 1, "text": '{"seq": 1}'})
    assert consumer.closing and len(sent) == 1
    await consumer.deliver({"type": "ward.event", "seq": 2, "text": '{"seq": 2}'})
    assert len(sent) == 1


async def test_a_catch_up_survives_a_redis_read_that_timed_out(
    ward_with_patient: dict, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis holds write commands (the ward log's read is a script, held too) for longer than
    # the client's 2 s socket timeout: the first read fails, the second gets the replay,
    # and the socket stays open instead of closing with 1011.
    import redis

    code, nurse = ward_with_patient["ward"].code, ward_with_patient["nurse"]
    async with dashboard(code, nurse) as (communicator, _, _):
        last_seq = (await communicator.receive_json_from(timeout=5))["seq"]
    missed = await ward_event_send(code, {"type": "vitals", "ward": code, "beds": [], "n": 1})
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.execute_command("CLIENT", "PAUSE", "2600", "WRITE")
    try:
        async with dashboard(code, nurse, query=f"?last_seq={last_seq}") as (communicator, _, _):
            replay = await communicator.receive_json_from(timeout=8)
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
        client.close()
    assert replay["type"] == "replay"
    assert [e["seq"] for e in replay["events"]] == [missed]
    assert "reading the ward log failed; trying once more" in caplog.messages
