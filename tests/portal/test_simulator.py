"""The device simulator: physiology, scenarios, message framing, delivery and the command.

The model is stepped in simulated seconds. The delivery tests run the real asyncio code on an
event loop whose clock jumps to the next timer instead of waiting, so a 30 s backoff takes no
time; the portal is replaced there by a minimal in-process handler (httpx.MockTransport),
because what is under test is the client's retry behaviour, not the endpoint.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import logging
import math
import random
import selectors
import statistics
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import httpx
import pytest
from django.core.management import CommandError, call_command

from alerts.news2 import News2Result, ParameterValue, news2_score
from monitoring.models import Device, token_digest
from monitoring.vitals import (
    BODY_TEMPERATURE,
    CONSCIOUSNESS,
    HEART_RATE,
    RESPIRATORY_RATE,
    SPO2,
    SUPPLEMENTAL_OXYGEN,
    SYSTOLIC_BP,
    VITALS,
    Vital,
)
from portal.demo import DEFAULT_PATH, demo_device_token, demo_hospital_parse
from portal.physiology import (
    SCENARIOS,
    SIMULATED_VITALS,
    DeviceSpec,
    OutgoingMessage,
    Reading,
    ScheduledScenario,
    SimulatedDevice,
)
from portal.simulator import (
    DEMO_PLAN,
    DeliveryPolicy,
    DeviceRunner,
    PlanInvalid,
    Simulation,
    SimulationStats,
    scenario_plan_build,
    simulated_devices_build,
)
from tests import factories

HR, SPO2_, RR, SBP, TEMP = (
    HEART_RATE.code,
    SPO2.code,
    RESPIRATORY_RATE.code,
    SYSTOLIC_BP.code,
    BODY_TEMPERATURE.code,
)
BASE_TIME = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)


def _device(
    serial: str = "SIM-01", scenario: str | None = None, *, seed: int = 7, start: float = 0.0
) -> SimulatedDevice:
    spec = DeviceSpec(serial=serial, token=f"dev_demo_{serial.lower()}", bed=None)
    plan = {serial: ScheduledScenario(SCENARIOS[scenario], start)} if scenario else {}
    return simulated_devices_build(specs=[spec], plan=plan, seed=seed, boot_id="boot")[0]


def _readings(scenario: str | None, *, seconds: int, seed: int = 7) -> list[Reading | None]:
    device = _device(scenario=scenario, seed=seed)
    return [device.read(1.0) for _ in range(seconds)]


def _series(readings: Sequence[Reading | None], code: str) -> list[float]:
    return [reading[code] for reading in readings if reading is not None]


def _mean(readings: Sequence[Reading | None], code: str, start: int, end: int) -> float:
    return statistics.fmean(_series(readings[start:end], code))


def _news2(values: Mapping[str, float]) -> News2Result:
    """The portal's own NEWS2 of these vitals, for a patient alert and on air."""
    latest = {
        code: ParameterValue(code=code, value=value, observed_at=BASE_TIME)
        for code, value in {**values, SUPPLEMENTAL_OXYGEN.code: 0, CONSCIOUSNESS.code: 0}.items()
    }
    result = news2_score(latest=latest, now=BASE_TIME, spo2_scale2=False)
    assert result.complete
    return result


# --- Physiology and scenarios -------------------------------------------------------------


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_it_stays_inside_the_plausibility_bands_at_device_precision(scenario: str | None) -> None:
    for seed in range(5):
        for reading in _readings(scenario, seconds=1800, seed=seed):
            if reading is None:
                continue
            assert list(reading) == [vital.code for vital in SIMULATED_VITALS]
            for code, value in reading.items():
                vital: Vital = VITALS[code]
                assert vital.plausible_min <= value <= vital.plausible_max
                assert round(value, vital.decimals) == value
                assert isinstance(value, int) == (vital.decimals == 0)


def test_it_keeps_a_stable_patient_in_the_normal_adult_range_most_of_the_time() -> None:
    results = [
        _news2(reading)
        for seed in range(20)
        for reading in _readings(None, seconds=1800, seed=seed)
        if reading is not None
    ]
    assert len(results) == 20 * 1800
    for parameter in ("respiratory_rate", "spo2", "systolic_bp", "pulse", "temperature"):
        scores = [next(p.score for p in r.parameters if p.parameter == parameter) for r in results]
        assert scores.count(0) / len(scores) >= 0.97, parameter
    assert sum(r.total == 0 for r in results) / len(results) >= 0.9
    assert max(r.total for r in results) <= 3


def test_it_gives_each_bed_its_own_baseline_and_replays_it_for_the_same_seed() -> None:
    baselines = [_device(f"SIM-{n:02d}").physiology.baseline for n in range(10)]
    assert len({round(b[HR], 3) for b in baselines}) == 10
    assert _readings(None, seconds=60, seed=3) == _readings(None, seconds=60, seed=3)
    assert _readings(None, seconds=60, seed=3) != _readings(None, seconds=60, seed=4)


def test_it_drifts_slowly_rather_than_jumping_around() -> None:
    heart_rates = _series(_readings(None, seconds=3600), HR)
    steps = [abs(b - a) for a, b in itertools.pairwise(heart_rates)]
    assert statistics.fmean(steps) < 4
    minute_means = [statistics.fmean(heart_rates[i : i + 60]) for i in range(0, 3600, 60)]
    assert max(minute_means) - min(minute_means) > 3  # it does wander


def test_it_desaturates_below_90_within_the_ramp_and_holds() -> None:
    for seed in range(5):
        spo2 = _series(_readings("desaturation", seconds=900, seed=seed), SPO2_)
        assert spo2[0] >= 94
        assert all(value < 90 for value in spo2[90:])
        assert 83 <= statistics.fmean(spo2[120:]) <= 87


@pytest.mark.parametrize(
    ("scenario", "code", "low", "high"),
    [
        ("tachycardia", HR, 130, 150),
        ("hypotension", SBP, 72, 88),
        ("fever", TEMP, 39.2, 39.8),
    ],
)
def test_it_reaches_and_holds_the_scenario_target(
    scenario: str, code: str, low: float, high: float
) -> None:
    readings = _readings(scenario, seconds=900)
    assert low <= _mean(readings, code, 300, 900) <= high
    assert not low <= _mean(readings, code, 0, 10) <= high


def test_it_raises_the_heart_rate_with_a_fever() -> None:
    readings = _readings("fever", seconds=900)
    assert _mean(readings, HR, 600, 900) - _mean(readings, HR, 0, 30) > 15


def test_it_deteriorates_step_by_step_in_sepsis() -> None:
    readings = _readings("sepsis", seconds=720)
    codes = (RR, HR, TEMP, SBP, SPO2_)
    minutes = [(0, 60), (120, 180), (240, 300), (360, 420), (540, 600)]
    means = [{code: _mean(readings, code, *minute) for code in codes} for minute in minutes]
    start, middle, end = means[0], means[2], means[4]
    for code in (RR, HR, TEMP):
        assert start[code] < middle[code] < end[code], VITALS[code].name
    assert start[SBP] > middle[SBP] > end[SBP]
    assert end[SBP] < start[SBP] - 15
    assert end[SPO2_] < start[SPO2_] - 3
    scores = [_news2(mean).total for mean in means]
    assert scores == sorted(scores)
    assert scores[0] <= 2
    assert scores[-1] >= 7
    assert len(set(scores)) >= 4  # a climb in steps, not a jump


def test_it_spikes_single_samples_in_artifact_and_comes_straight_back() -> None:
    readings = _readings("artifact", seconds=1200)
    spikes = [
        i
        for i, r in enumerate(readings)
        if 0 < i < len(readings) - 1 and r is not None and (r[SPO2_] <= 80 or r[HR] >= 160)
    ]
    assert 20 <= len(spikes) <= 70  # about two a minute
    for i in spikes:
        before, after = readings[i - 1], readings[i + 1]
        assert before is not None and after is not None
        assert after[SPO2_] >= 94 and after[HR] <= 100
        assert before[SPO2_] >= 94 and before[HR] <= 100


def test_it_goes_silent_for_a_minute_in_disconnect_then_resumes() -> None:
    device = _device(scenario="disconnect", start=120)
    messages = [device.tick(seconds=1.0, now=BASE_TIME) for _ in range(300)]
    silent = [i for i, message in enumerate(messages) if message is None]
    assert silent == list(range(119, 179))
    after = [message for message in messages[179:] if message is not None]
    assert after[0].message_id == "SIM-01-boot-120"  # numbering goes on without a hole


# --- Messages -----------------------------------------------------------------------------


def test_it_frames_messages_as_the_ingestion_contract_says() -> None:
    device = _device()
    now = dt.datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    messages = [device.tick(seconds=1.0, now=now) for _ in range(3)]
    sent = [message for message in messages if message is not None]
    assert len(sent) == 3
    ids = [message.message_id for message in sent]
    assert len(set(ids)) == 3 and all(len(message_id) <= 255 for message_id in ids)
    body = json.loads(sent[0].body)
    assert set(body) == {"message_id", "observations"}
    assert body["message_id"] == ids[0]
    assert [o["code"] for o in body["observations"]] == [v.code for v in SIMULATED_VITALS]
    assert {o["code"] for o in body["observations"]} == {
        HR,
        SPO2_,
        RR,
        SBP,
        TEMP,
        "8462-4",
    }
    for observation in body["observations"]:
        vital = VITALS[observation["code"]]
        assert set(observation) == {"code", "value", "unit", "observed_at"}
        assert observation["unit"] == vital.unit
        assert isinstance(observation["value"], int | float)
        assert not isinstance(observation["value"], bool)
        assert math.isfinite(observation["value"])
        assert observation["observed_at"] == "2026-11-21T10:00:00.123Z"
        assert dt.datetime.fromisoformat(observation["observed_at"]) == now.replace(
            microsecond=123000
        )


def test_it_plans_the_demo_on_a_few_beds_and_lets_explicit_scenarios_win() -> None:
    specs = [DeviceSpec(serial, "t", f"amu/Bed {serial[-2:]}") for serial, _, _ in DEMO_PLAN]
    specs += [DeviceSpec(f"OTHER-{n}", "t", f"surg/Bed {n}") for n in range(20)]
    demo = scenario_plan_build(specs=specs, requested=[], demo_plan=True)
    assert len(demo) == len(DEMO_PLAN) < len(specs) / 2
    assert {s.scenario.name for s in demo.values()} == set(SCENARIOS)
    assert len({s.start_after for s in demo.values()}) > 4  # staggered
    plan = scenario_plan_build(specs=specs, requested=["amu/bed06=fever@45"], demo_plan=True)
    assert plan["DEMO-AMU-06"] == ScheduledScenario(SCENARIOS["fever"], 45.0)
    assert plan.keys() == demo.keys()
    assert scenario_plan_build(specs=specs, requested=[], demo_plan=False) == {}
    by_serial = scenario_plan_build(specs=specs, requested=["other-3=sepsis"], demo_plan=False)
    assert by_serial == {"OTHER-3": ScheduledScenario(SCENARIOS["sepsis"], 0.0)}
    for bad in ["amu/bed06=nosuch", "nobed=fever", "fever", "amu/bed06=fever@-5"]:
        with pytest.raises(PlanInvalid):
            scenario_plan_build(specs=specs, requested=[bad], demo_plan=False)


def test_it_plans_the_demo_on_beds_of_the_demo_hospital() -> None:
    hospital = demo_hospital_parse(path=DEFAULT_PATH)
    beds = {bed.device.serial: bed for ward in hospital.wards for bed in ward.beds if bed.device}
    for serial, name, _ in DEMO_PLAN:
        assert name in SCENARIOS
        assert serial in beds and beds[serial].patient is not None, serial


# --- Delivery, on a loop whose clock jumps instead of waiting ------------------------------


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits on a timer: moves the virtual clock to it instead."""

    now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:  # nothing scheduled: only real I/O can wake the loop
            return super().select(None)
        ready = super().select(0)
        if not ready:
            self.now += timeout
        return ready


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def _run_in_virtual_time(coroutine: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=_VirtualTimeLoop) as runner:
        return runner.run(coroutine)


def _virtual_wall_clock() -> dt.datetime:
    return BASE_TIME + dt.timedelta(seconds=asyncio.get_running_loop().time())


Handler = Callable[[httpx.Request], httpx.Response]


def _fake_portal_accepting_after(
    failures: Sequence[Exception | httpx.Response],
) -> tuple[Handler, list[tuple[float, httpx.Request]]]:
    """A stand-in for the endpoint: answers ``failures`` in turn, then 201 for good."""
    seen: list[tuple[float, httpx.Request]] = []
    queue = list(failures)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((asyncio.get_running_loop().time(), request))
        if queue:
            answer = queue.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        body = json.loads(request.content)
        return httpx.Response(
            201, json={"message_id": body["message_id"], "accepted": 6, "patient": None}
        )

    return handler, seen


def _deliver(
    handler: Handler, messages: int = 1, policy: DeliveryPolicy | None = None
) -> tuple[SimulationStats, list[OutgoingMessage]]:
    device = _device()
    stats = SimulationStats()
    outgoing = [device.tick(seconds=1.0, now=BASE_TIME) for _ in range(messages)]

    async def deliver_all() -> None:
        async with httpx.AsyncClient(
            base_url="http://portal.test", transport=httpx.MockTransport(handler)
        ) as client:
            runner = DeviceRunner(
                device=device,
                client=client,
                stats=stats,
                policy=policy or DeliveryPolicy(),
                rng=random.Random(1),
                wall_clock=_virtual_wall_clock,
            )
            for message in outgoing:
                assert message is not None
                await runner.deliver(message)

    _run_in_virtual_time(deliver_all())
    return stats, [m for m in outgoing if m is not None]


def test_it_resends_the_same_bytes_and_message_id_after_network_errors_and_5xx() -> None:
    handler, seen = _fake_portal_accepting_after(
        [
            httpx.ConnectError("refused"),
            httpx.Response(503),
            httpx.ReadTimeout("slow"),
            httpx.Response(502, text="<html>bad gateway</html>"),
        ]
    )
    stats, [message] = _deliver(handler)
    assert len(seen) == 5
    assert {request.content for _, request in seen} == {message.body}
    assert {json.loads(request.content)["message_id"] for _, request in seen} == {
        message.message_id
    }
    for _, request in seen:
        assert request.url == "http://portal.test/api/v1/ingest/"
        assert request.method == "POST"
        assert request.headers["Authorization"] == "Device dev_demo_sim-01"
        assert request.headers["Content-Type"] == "application/json"
    waits = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    assert waits == sorted(waits) and waits[0] > 0  # backing off
    assert (stats.sent, stats.accepted, stats.retried, stats.dropped) == (1, 6, 4, 0)


def test_it_caps_the_backoff_and_gives_up_after_bounded_attempts_counting_the_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, seen = _fake_portal_accepting_after([httpx.Response(500)] * 50)
    with caplog.at_level(logging.INFO, logger="portal.simulator"):
        stats, [message] = _deliver(handler, policy=DeliveryPolicy(max_attempts=9))
    assert len(seen) == 9
    waits = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    assert max(waits) <= 30
    assert (stats.sent, stats.retried, stats.dropped) == (0, 8, 1)
    assert f"message {message.message_id} DROPPED after 9 attempts" in caplog.text


def test_it_honours_retry_after_when_rate_limited() -> None:
    handler, seen = _fake_portal_accepting_after(
        [
            httpx.Response(429, headers={"Retry-After": "7"}, json={"code": "rate_limited"}),
            httpx.Response(429, headers={"Retry-After": "Sat, 21 Nov 2026 10:00:19 GMT"}, json={}),
        ]
    )
    stats, _ = _deliver(handler)
    assert [round(t, 6) for t, _ in seen] == [0, 7, 19]
    assert (stats.sent, stats.retried) == (1, 2)


def test_it_logs_a_refusal_without_patient_data_and_moves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, seen = _fake_portal_accepting_after(
        [httpx.Response(400, json={"code": "implausible_value", "detail": "Out of range."})]
    )
    with caplog.at_level(logging.INFO, logger="portal.simulator"):
        stats, messages = _deliver(handler, messages=2)
    assert len(seen) == 2  # not retried; the next message went out
    assert (stats.sent, stats.rejected, stats.retried) == (1, 1, 0)
    [record] = [r for r in caplog.records if r.name == "portal.simulator"]
    assert record.levelno == logging.WARNING
    assert "SIM-01" in record.getMessage()
    assert messages[0].message_id in record.getMessage()
    assert "implausible_value" in record.getMessage()
    assert "observations" not in caplog.text and "8867-4" not in caplog.text


def test_it_drops_the_oldest_waiting_message_when_the_queue_overflows_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = _device()
    stats = SimulationStats()
    messages = [m for _ in range(5) if (m := device.tick(seconds=1.0, now=BASE_TIME))]

    async def overflow() -> DeviceRunner:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(201))
        ) as c:
            runner = DeviceRunner(
                device=device,
                client=c,
                stats=stats,
                policy=DeliveryPolicy(queue_limit=3),
                rng=random.Random(1),
            )
            for message in messages:
                runner.enqueue(message)
            return runner

    with caplog.at_level(logging.INFO, logger="portal.simulator"):
        runner = _run_in_virtual_time(overflow())
    assert runner.queued == 3
    assert stats.dropped == 2
    assert [r.levelno for r in caplog.records if r.name == "portal.simulator"] == [
        logging.ERROR
    ] * 2
    assert "DROPPED" in caplog.text and messages[0].message_id in caplog.text


def _simulate(
    handler: Handler, *, devices: int, duration: float, interval: float = 1.0
) -> tuple[SimulationStats, list[str]]:
    specs = [DeviceSpec(f"SIM-{n:02d}", f"dev_demo_sim-{n:02d}", None) for n in range(devices)]
    lines: list[str] = []
    simulation = Simulation(
        devices=simulated_devices_build(specs=specs, plan={}, seed=1, boot_id="boot"),
        url="http://portal.test",
        interval=interval,
        duration=duration,
        report=lines.append,
        wall_clock=_virtual_wall_clock,
        transport=httpx.MockTransport(handler),
        rng=random.Random(1),
    )
    _run_in_virtual_time(simulation.run())
    return simulation.stats, lines


def test_it_sends_one_message_per_device_per_interval_with_jittered_starts() -> None:
    handler, seen = _fake_portal_accepting_after([])
    stats, lines = _simulate(handler, devices=3, duration=35)
    by_device: dict[str, list[float]] = {}
    for at, request in seen:
        by_device.setdefault(request.headers["Authorization"], []).append(at)
    assert len(by_device) == 3
    for times in by_device.values():
        assert len(times) == 35  # at 0.x s, 1.x s, ... 34.x s
        assert all(abs((b - a) - 1.0) < 1e-6 for a, b in itertools.pairwise(times))
    firsts = sorted(times[0] for times in by_device.values())
    assert len(set(firsts)) == 3 and firsts[-1] < 1.0
    assert (stats.sent, stats.accepted) == (105, 630)
    # Every 10 s, plus the final one.
    assert [line[:10] for line in lines] == ["[10:00:10]", "[10:00:20]", "[10:00:30]", "[10:00:35]"]
    assert lines[-1].endswith(
        "sent 105, accepted 630 observations, retried 0, rejected 0, dropped 0, queued 0"
    )


def test_it_keeps_messages_queued_through_an_outage_and_delivers_them_all_in_order() -> None:
    seen: list[str] = []

    def portal_down_from_5_to_40_s(request: httpx.Request) -> httpx.Response:
        if 5 <= asyncio.get_running_loop().time() < 40:
            raise httpx.ConnectError("connection refused")
        message_id = json.loads(request.content)["message_id"]
        if message_id not in seen:
            seen.append(message_id)
        return httpx.Response(201, json={"message_id": message_id, "accepted": 6})

    stats, _ = _simulate(portal_down_from_5_to_40_s, devices=2, duration=120)
    assert stats.retried > 0 and stats.dropped == 0 and stats.rejected == 0
    for serial in ("SIM-00", "SIM-01"):
        sequence = [int(m.rsplit("-", 1)[1]) for m in seen if m.startswith(serial)]
        assert sequence == list(range(1, len(sequence) + 1))
        assert len(sequence) >= 118


# --- The command --------------------------------------------------------------------------


def _demo_device(serial: str, **fields: object) -> Device:
    return factories.device(
        serial=serial, token_digest=token_digest(demo_device_token(serial)), **fields
    )


@pytest.mark.django_db
def test_it_drives_only_active_devices_holding_their_demo_token() -> None:
    ward = factories.ward(code="amu")
    _demo_device("DEMO-AMU-06", bed_=factories.bed(ward, label="Bed 06"))
    _demo_device("DEMO-AMU-01", bed_=factories.bed(ward, label="Bed 01"))
    _demo_device("DEMO-SPARE-01")
    _demo_device("DEMO-OLD-01", active=False)
    factories.device(serial="DEMO-ROTATED-01", token_digest=token_digest("dev_rotated"))
    factories.device(serial="DEMO-NOTOKEN-01")

    out = io.StringIO()
    call_command(
        "simulate_devices",
        "--dry-run",
        "--seed",
        "5",
        "--scenario",
        "DEMO-SPARE-01=fever@30",
        stdout=out,
    )
    text = out.getvalue()
    assert "Simulating 3 demo devices" in text and "--seed 5" in text
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert list(lines) == ["DEMO-AMU-01", "DEMO-AMU-06", "DEMO-SPARE-01"]
    assert "amu/Bed 06" in lines["DEMO-AMU-06"] and "sepsis from +30 s" in lines["DEMO-AMU-06"]
    assert "stable" in lines["DEMO-AMU-01"]
    assert "(no bed)" in lines["DEMO-SPARE-01"] and "fever from +30 s" in lines["DEMO-SPARE-01"]

    out = io.StringIO()
    call_command("simulate_devices", "--dry-run", "--devices", "1", "--no-demo-plan", stdout=out)
    assert "Simulating 1 demo devices" in out.getvalue()


@pytest.mark.django_db
def test_it_refuses_an_unknown_scenario_or_target_and_an_empty_hospital() -> None:
    with pytest.raises(CommandError, match="load_demo"):
        call_command("simulate_devices", "--dry-run", stdout=io.StringIO())
    _demo_device("DEMO-AMU-01")
    with pytest.raises(CommandError, match="no scenario 'nosuch'"):
        call_command("simulate_devices", "--dry-run", "--scenario", "DEMO-AMU-01=nosuch")
    with pytest.raises(CommandError, match="no simulated device"):
        call_command("simulate_devices", "--dry-run", "--scenario", "amu/bed99=fever")


@pytest.mark.django_db
def test_it_refuses_to_run_in_production_mode(settings: Any) -> None:
    settings.PORTAL_MODE = "production"
    _demo_device("DEMO-AMU-01")
    with pytest.raises(CommandError, match="production"):
        call_command("simulate_devices", "--dry-run", stdout=io.StringIO())
