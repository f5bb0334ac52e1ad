"""The simulated bedside: patients' physiology, scenarios, and the monitor that measures them.

DEMO ONLY, and free of Django. A patient's physiology (a baseline per bed, a slow
mean-reverting drift, a few couplings), the named scenarios that script a deterioration over
time, and the monitor that measures it (noise, artifacts, device precision, the catalogue's
plausibility band). Stepped in simulated seconds and seeded, so it is deterministic and tests
need no clock. ``portal.simulator`` plans which scenario runs where and drives the devices.

Every code, unit, precision and plausibility band comes from ``monitoring.vitals``; the numbers
here are simulation parameters (what a plausible adult on a ward looks like), not clinical rules.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitoring.vitals import (
    BODY_TEMPERATURE,
    DIASTOLIC_BP,
    HEART_RATE,
    RESPIRATORY_RATE,
    SPO2,
    SYSTOLIC_BP,
    Vital,
)

# --- Physiology ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VitalDynamics:
    """How one vital behaves in a stable simulated adult."""

    vital: Vital
    # A stable patient's baseline is drawn uniformly from [stable_low, stable_high]: inside the
    # NEWS2 zero-score band of ../shared/clinical.md with a margin for drift and noise.
    stable_low: float
    stable_high: float
    drift_sd: float  # stationary standard deviation of the slow drift
    drift_tau: float  # seconds for the drift to relax back towards the baseline (1/e)
    noise_sd: float  # measurement noise, independent per sample


DYNAMICS: tuple[VitalDynamics, ...] = (
    VitalDynamics(HEART_RATE, 62, 82, drift_sd=3.0, drift_tau=120, noise_sd=1.5),
    VitalDynamics(SPO2, 97, 99, drift_sd=0.6, drift_tau=60, noise_sd=0.4),
    VitalDynamics(RESPIRATORY_RATE, 13, 17, drift_sd=1.0, drift_tau=90, noise_sd=0.6),
    VitalDynamics(SYSTOLIC_BP, 118, 140, drift_sd=4.0, drift_tau=180, noise_sd=2.5),
    VitalDynamics(DIASTOLIC_BP, 65, 82, drift_sd=3.0, drift_tau=180, noise_sd=2.0),
    VitalDynamics(BODY_TEMPERATURE, 36.5, 37.2, drift_sd=0.1, drift_tau=600, noise_sd=0.05),
)
SIMULATED_VITALS: tuple[Vital, ...] = tuple(dynamics.vital for dynamics in DYNAMICS)

# Couplings, applied only to a vital the running scenario does not script itself.
HR_PER_DEGREE_OF_FEVER = 10.0  # Liebermeister's rule: about 10 /min per °C
RR_PER_DEGREE_OF_FEVER = 2.0
HR_PER_PERCENT_OF_DESATURATION = 0.5
RR_PER_PERCENT_OF_DESATURATION = 0.3
HR_PER_MMHG_OF_HYPOTENSION = 0.3  # the baroreflex
DIASTOLIC_PER_MMHG_OF_SYSTOLIC = 0.55
MIN_PULSE_PRESSURE = 15  # mm[Hg]: a measured diastolic stays this far under the systolic

Baseline = Mapping[str, float]  # vital code → the patient's resting value


def baseline_draw(rng: random.Random) -> dict[str, float]:
    """A stable adult's resting vitals."""
    return {d.vital.code: rng.uniform(d.stable_low, d.stable_high) for d in DYNAMICS}


@dataclass(frozen=True, slots=True)
class Keyframe:
    """Scripted values reached ``at`` seconds after a scenario starts (linear in between)."""

    at: float
    targets: Mapping[str, float]  # vital code → value


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    # The first keyframe ramps from the patient's own baseline; the last one holds.
    keyframes: tuple[Keyframe, ...] = ()
    # (from, to) seconds after the start during which the device sends nothing.
    silent: tuple[float, float] | None = None
    artifacts_per_minute: float = 0.0

    def scripted_values(self, *, since_start: float, baseline: Baseline) -> dict[str, float]:
        values = {}
        for code in {code for keyframe in self.keyframes for code in keyframe.targets}:
            points = [(0.0, baseline[code])] + [
                (k.at, k.targets[code]) for k in self.keyframes if code in k.targets
            ]
            values[code] = _piecewise_linear(points, since_start)
        return values

    def is_silent(self, *, since_start: float) -> bool:
        return self.silent is not None and self.silent[0] <= since_start < self.silent[1]


def _piecewise_linear(points: Sequence[tuple[float, float]], at: float) -> float:
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if at < t1:
            return v0 + (v1 - v0) * max(0.0, at - t0) / (t1 - t0)
    return points[-1][1]


_HR, _SPO2, _RR = HEART_RATE.code, SPO2.code, RESPIRATORY_RATE.code
_SBP, _DBP, _TEMP = SYSTOLIC_BP.code, DIASTOLIC_BP.code, BODY_TEMPERATURE.code

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "desaturation",
            "SpO2 falls to the mid-80s over 90 s and holds",
            keyframes=(Keyframe(90, {_SPO2: 85}),),
        ),
        Scenario(
            "tachycardia",
            "heart rate climbs to about 140 /min within a minute and stays",
            keyframes=(Keyframe(60, {_HR: 140}),),
        ),
        Scenario(
            "hypotension",
            "systolic BP falls to about 80 mm[Hg] over 2 min and holds",
            keyframes=(Keyframe(120, {_SBP: 80}),),
        ),
        Scenario(
            "fever",
            "temperature rises to 39.5 Cel over 4 min and holds (heart rate follows)",
            keyframes=(Keyframe(240, {_TEMP: 39.5}),),
        ),
        Scenario(
            # Each keyframe is one more NEWS2 step (see clinical.md): about 2, 4, 6, 10, then 12.
            "sepsis",
            "deterioration over 8 min: RR, HR, temperature up, SBP and SpO2 down; NEWS2 ≥ 7",
            keyframes=(
                Keyframe(90, {_RR: 19, _HR: 93, _TEMP: 38.3}),
                Keyframe(180, {_RR: 21, _HR: 100, _TEMP: 38.6}),
                Keyframe(270, {_RR: 23, _HR: 108, _TEMP: 38.9, _SBP: 108, _SPO2: 95}),
                Keyframe(360, {_RR: 25, _HR: 116, _TEMP: 39.2, _SBP: 98, _SPO2: 94}),
                Keyframe(480, {_RR: 28, _HR: 128, _TEMP: 39.5, _SBP: 86, _SPO2: 92}),
            ),
        ),
        Scenario("disconnect", "the device sends nothing for 60 s, then resumes", silent=(0, 60)),
        Scenario(
            "artifact",
            "about two single-sample spikes a minute (SpO2 ~70 % or HR ~180 /min)",
            artifacts_per_minute=2.0,
        ),
    )
}
# A motion artifact or a loose probe: one implausible-looking but plausible sample.
ARTIFACT_SPIKES: dict[str, tuple[float, float]] = {_SPO2: (65, 75), _HR: (170, 190)}


@dataclass(frozen=True, slots=True)
class ScheduledScenario:
    scenario: Scenario
    start_after: float = 0.0  # simulated seconds after the device started

    def since_start(self, elapsed: float) -> float | None:
        return elapsed - self.start_after if elapsed >= self.start_after else None


class PatientPhysiology:
    """The patient's true vitals over simulated time: baseline + scenario + drift + coupling."""

    def __init__(
        self,
        *,
        baseline: Baseline,
        rng: random.Random,
        scheduled: ScheduledScenario | None = None,
    ) -> None:
        self.baseline = dict(baseline)
        self.scheduled = scheduled
        self.elapsed = 0.0
        self._rng = rng
        # Ornstein–Uhlenbeck drift, started from its stationary distribution.
        self._drift = {d.vital.code: rng.gauss(0.0, d.drift_sd) for d in DYNAMICS}

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds
        for d in DYNAMICS:
            # The exact OU update, so the statistics do not depend on the step size.
            keep = math.exp(-seconds / d.drift_tau)
            shock = d.drift_sd * math.sqrt(1.0 - keep * keep) * self._rng.gauss(0.0, 1.0)
            self._drift[d.vital.code] = self._drift[d.vital.code] * keep + shock

    def since_scenario_start(self) -> float | None:
        return self.scheduled.since_start(self.elapsed) if self.scheduled else None

    def true_values(self) -> dict[str, float]:
        since = self.since_scenario_start()
        scripted = (
            self.scheduled.scenario.scripted_values(since_start=since, baseline=self.baseline)
            if self.scheduled and since is not None
            else {}
        )
        values = {
            code: scripted.get(code, resting) + self._drift[code]
            for code, resting in self.baseline.items()
        }
        fever = values[_TEMP] - self.baseline[_TEMP]
        desaturation = max(0.0, self.baseline[_SPO2] - values[_SPO2])
        hypotension = max(0.0, self.baseline[_SBP] - values[_SBP])
        if _HR not in scripted:
            values[_HR] += (
                HR_PER_DEGREE_OF_FEVER * fever
                + HR_PER_PERCENT_OF_DESATURATION * desaturation
                + HR_PER_MMHG_OF_HYPOTENSION * hypotension
            )
        if _RR not in scripted:
            values[_RR] += RR_PER_DEGREE_OF_FEVER * fever
            values[_RR] += RR_PER_PERCENT_OF_DESATURATION * desaturation
        if _DBP not in scripted:
            values[_DBP] += DIASTOLIC_PER_MMHG_OF_SYSTOLIC * (values[_SBP] - self.baseline[_SBP])
        return values


def device_value(vital: Vital, value: float) -> int | float:
    """``value`` at the device's precision, clamped into the catalogue's plausibility band."""
    clamped = min(vital.plausible_max, max(vital.plausible_min, round(value, vital.decimals)))
    return int(clamped) if vital.decimals == 0 else float(clamped)


# --- The simulated device -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to drive, as read from the database."""

    serial: str
    token: str
    bed: str | None  # "ward code/bed label", e.g. "amu/Bed 03"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    serial: str
    message_id: str
    # Serialised once: a retry resends exactly these bytes under the same message_id.
    body: bytes


Reading = dict[str, int | float]  # vital code → value as the device reports it


def observed_at_format(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, e.g. 2026-11-21T10:00:00.123Z."""
    utc = moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return utc.removesuffix("+00:00") + "Z"


class SimulatedDevice:
    """A bedside monitor on one simulated patient: measures, and frames messages."""

    def __init__(
        self,
        *,
        spec: DeviceSpec,
        physiology: PatientPhysiology,
        rng: random.Random,
        boot_id: str,
    ) -> None:
        self.spec = spec
        self.physiology = physiology
        self.boot_id = boot_id
        self.seq = 0
        self._rng = rng
        self._last_was_artifact = False

    def read(self, seconds: float) -> Reading | None:
        """Advance the patient by ``seconds`` and measure; None while the device is silent."""
        physiology = self.physiology
        physiology.advance(seconds)
        since = physiology.since_scenario_start()
        scenario = physiology.scheduled.scenario if physiology.scheduled else None
        if scenario and since is not None and scenario.is_silent(since_start=since):
            return None
        true_values = physiology.true_values()
        noise = {d.vital.code: self._rng.gauss(0.0, d.noise_sd) for d in DYNAMICS}
        reading: Reading = {
            v.code: device_value(v, true_values[v.code] + noise[v.code]) for v in SIMULATED_VITALS
        }
        reading[_DBP] = min(reading[_DBP], max(0, reading[_SBP] - MIN_PULSE_PRESSURE))
        rate = scenario.artifacts_per_minute / 60.0 if scenario and since is not None else 0.0
        # Never two in a row: an artifact is one sample, which is what artifact rejection
        # in the portal is meant to recognise.
        if not self._last_was_artifact and self._rng.random() < rate * seconds:
            code = self._rng.choice(sorted(ARTIFACT_SPIKES))
            low, high = ARTIFACT_SPIKES[code]
            vital = next(v for v in SIMULATED_VITALS if v.code == code)
            reading[code] = device_value(vital, self._rng.uniform(low, high))
            self._last_was_artifact = True
        else:
            self._last_was_artifact = False
        return reading

    def tick(self, *, seconds: float, now: dt.datetime) -> OutgoingMessage | None:
        """One interval: the next message to post, or None while the device is silent."""
        reading = self.read(seconds)
        if reading is None:
            return None
        self.seq += 1
        message_id = f"{self.spec.serial}-{self.boot_id}-{self.seq}"
        observed_at = observed_at_format(now)
        units = {v.code: v.unit for v in SIMULATED_VITALS}
        body = {
            "message_id": message_id,
            "observations": [
                {"code": code, "value": value, "unit": units[code], "observed_at": observed_at}
                for code, value in reading.items()
            ],
        }
        encoded = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        return OutgoingMessage(serial=self.spec.serial, message_id=message_id, body=encoded)
