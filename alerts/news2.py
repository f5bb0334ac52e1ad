"""NEWS2 (National Early Warning Score 2, Royal College of Physicians 2017): pure scoring.

The chart, the SpO2 scale 2 rule and the risk/response table come from ../shared/clinical.md
and nowhere else. This module reads no database and no clock: the caller passes the latest
value of each input and ``now``, and gets back a :class:`News2Result`.

Choices the chart leaves to the portal, made conservatively (clinical.md: when in doubt, alarm
rather than stay silent) and pinned by tests/alerts/test_news2.py:

Rounding
    The chart prints whole numbers for rates, SpO2 and blood pressure and one decimal for
    temperature, so a value between two printed bands (rate 20.5, temperature 36.05) is first
    rounded to the chart's precision (``Vital.decimals`` in the catalogue), then scored by
    the bands. Rounding is ROUND HALF UP (20.5 -> 21, 36.05 -> 36.1), not Python's
    round-half-to-even, and works on ``str(value)`` through ``decimal.Decimal``: the float
    36.05 is really 36.04999999999999715..., which would otherwise round down to 36.0.

Freshness (:data:`FRESHNESS`)
    NEWS2 is only as good as its inputs, and clinical.md forbids presenting old data as live.
    A value older than its window is *stale*: it counts as missing, the result is incomplete,
    and it is never scored, least of all as 0.

    - Device-measured vitals (respiratory rate, SpO2, systolic BP, pulse, temperature):
      5 minutes. Monitors post these continuously, so a value older than that means the
      sensor or the feed has stopped, and a score built on it would describe the past.
    - Nurse-entered inputs (air or oxygen, consciousness): 12 hours, the longest routine
      observation interval NEWS2 asks for (aggregate 0: "observations at least every 12 h").

    The window is inclusive (a value exactly 5 minutes old still counts). A value observed
    after ``now`` (clock skew between a device and the server) counts as fresh.

SpO2 scale 2 with air/oxygen unknown
    Scale 2 (only when the patient's clinician set it: ``spo2_scale2=True``) scores SpO2 >= 93
    differently on air (0) and on oxygen (1-3). When air/oxygen is missing or stale, SpO2 >= 93
    is scored as if on oxygen, the higher score, so that not knowing can only raise an alarm,
    never hide one. The result is incomplete anyway (air/oxygen is listed in ``missing``).

Values that are not finite numbers (NaN, infinity) cannot be placed in a band and count as
missing, like a value that never arrived.

Incomplete results
    ``total`` then sums only what could be scored, so it is a lower bound, and ``risk`` and
    ``response`` are those of that lower bound: the missing parameters can only raise them.
    Callers must show ``complete``/``missing`` next to the score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from monitoring import vitals


@dataclass(frozen=True, slots=True)
class ParameterValue:
    """The latest value of one NEWS2 input."""

    code: str  # catalogue code (monitoring.vitals)
    value: float  # canonical unit
    observed_at: datetime  # aware UTC


@dataclass(frozen=True, slots=True)
class ParameterScore:
    parameter: str  # a Parameter value
    code: str
    value: float | None  # the rounded value scored, None if missing or stale
    score: int | None  # None when missing or stale
    observed_at: datetime | None
    stale: bool  # present but older than its freshness window


class Risk(StrEnum):
    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class News2Result:
    total: int  # sum of the scored parameters (a lower bound when incomplete)
    complete: bool  # all 7 parameters present and fresh
    missing: tuple[str, ...]  # parameter names missing or stale, in chart order
    parameters: tuple[ParameterScore, ...]  # in chart order
    scale: int  # SpO2 scale, 1 or 2
    any_single_three: bool
    risk: Risk
    response: str


class Parameter(StrEnum):
    """The seven NEWS2 parameters, in the chart's order."""

    RESPIRATORY_RATE = "respiratory_rate"
    SPO2 = "spo2"
    AIR_OR_OXYGEN = "air_or_oxygen"
    SYSTOLIC_BP = "systolic_bp"
    PULSE = "pulse"
    CONSCIOUSNESS = "consciousness"
    TEMPERATURE = "temperature"


VITAL_FOR_PARAMETER: dict[Parameter, vitals.Vital] = {
    Parameter.RESPIRATORY_RATE: vitals.RESPIRATORY_RATE,
    Parameter.SPO2: vitals.SPO2,
    Parameter.AIR_OR_OXYGEN: vitals.SUPPLEMENTAL_OXYGEN,
    Parameter.SYSTOLIC_BP: vitals.SYSTOLIC_BP,
    Parameter.PULSE: vitals.HEART_RATE,
    Parameter.CONSCIOUSNESS: vitals.CONSCIOUSNESS,
    Parameter.TEMPERATURE: vitals.BODY_TEMPERATURE,
}

# Portal choices, explained in the module docstring.
DEVICE_FRESHNESS = timedelta(minutes=5)
NURSE_ENTERED_FRESHNESS = timedelta(hours=12)
FRESHNESS: dict[str, timedelta] = {
    Parameter.RESPIRATORY_RATE: DEVICE_FRESHNESS,
    Parameter.SPO2: DEVICE_FRESHNESS,
    Parameter.AIR_OR_OXYGEN: NURSE_ENTERED_FRESHNESS,
    Parameter.SYSTOLIC_BP: DEVICE_FRESHNESS,
    Parameter.PULSE: DEVICE_FRESHNESS,
    Parameter.CONSCIOUSNESS: NURSE_ENTERED_FRESHNESS,
    Parameter.TEMPERATURE: DEVICE_FRESHNESS,
}

# The chart (clinical.md), one row per parameter: (highest value of the band, score) from the
# lowest band up, then the score of every value above the last band. Values are compared after
# rounding to the chart's precision, so the printed edges are exact.
_Bands = tuple[tuple[Decimal, int], ...]
_RESPIRATORY_RATE_BANDS: _Bands = (
    (Decimal(8), 3),
    (Decimal(11), 1),
    (Decimal(20), 0),
    (Decimal(24), 2),
)
_RESPIRATORY_RATE_ABOVE = 3
_SPO2_SCALE1_BANDS: _Bands = ((Decimal(91), 3), (Decimal(93), 2), (Decimal(95), 1))
_SPO2_SCALE1_ABOVE = 0
# Scale 2: the same on air and on oxygen up to 92 %; "above" is 88–92, or >= 93 on air.
_SPO2_SCALE2_BANDS: _Bands = ((Decimal(83), 3), (Decimal(85), 2), (Decimal(87), 1))
_SPO2_SCALE2_ABOVE = 0
# Scale 2 from 93 % on oxygen.
_SPO2_SCALE2_ON_OXYGEN_FROM = Decimal(93)
_SPO2_SCALE2_ON_OXYGEN_BANDS: _Bands = ((Decimal(94), 1), (Decimal(96), 2))
_SPO2_SCALE2_ON_OXYGEN_ABOVE = 3
_SYSTOLIC_BP_BANDS: _Bands = (
    (Decimal(90), 3),
    (Decimal(100), 2),
    (Decimal(110), 1),
    (Decimal(219), 0),
)
_SYSTOLIC_BP_ABOVE = 3
_PULSE_BANDS: _Bands = (
    (Decimal(40), 3),
    (Decimal(50), 1),
    (Decimal(90), 0),
    (Decimal(110), 1),
    (Decimal(130), 2),
)
_PULSE_ABOVE = 3
_TEMPERATURE_BANDS: _Bands = (
    (Decimal("35.0"), 3),
    (Decimal("36.0"), 1),
    (Decimal("38.0"), 0),
    (Decimal("39.0"), 1),
)
_TEMPERATURE_ABOVE = 2
# Catalogue encodings: SUPPLEMENTAL_OXYGEN 0 = air; CONSCIOUSNESS (ACVPU) 0 = Alert.
_AIR = Decimal(0)
_ALERT = Decimal(0)
_ON_OXYGEN_SCORE = 2
_NOT_ALERT_SCORE = 3  # new confusion, Voice, Pain or Unresponsive

# The risk and response table (clinical.md), worded as there.
_RESPONSE_AGGREGATE_ZERO = "observations at least every 12 h"
_RESPONSE_AGGREGATE_LOW = "at least every 4–6 h; registered nurse assesses"
_RESPONSE_SINGLE_THREE = "at least hourly; urgent review by the ward's medical team"
_RESPONSE_MEDIUM = "at least hourly; urgent review by a clinician with acute-care skills"
_RESPONSE_HIGH = (
    "continuous monitoring; emergency assessment by a critical-care team; "
    "consider transfer to HDU/ICU"
)
_MEDIUM_FROM = 5
_HIGH_FROM = 7


def news2_score(
    *, latest: Mapping[str, ParameterValue], now: datetime, spo2_scale2: bool
) -> News2Result:
    """Score NEWS2 from the latest value of each input, as of ``now``.

    ``latest`` maps catalogue codes to values; any may be absent, and codes NEWS2 does not use
    are ignored. ``spo2_scale2`` is the patient's SpO2 scale 2 setting (off by default).
    Never raises for missing, stale or unusable inputs: they make the result incomplete.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")

    rounded: dict[Parameter, Decimal] = {}
    seen: dict[Parameter, ParameterValue] = {}
    stale: set[Parameter] = set()
    for parameter, vital in VITAL_FOR_PARAMETER.items():
        reading = latest.get(vital.code)
        if reading is None:
            continue
        seen[parameter] = reading
        if now - reading.observed_at > FRESHNESS[parameter]:
            stale.add(parameter)
        elif math.isfinite(reading.value):
            rounded[parameter] = _chart_round(reading.value, decimals=vital.decimals)

    on_oxygen: bool | None = None
    if Parameter.AIR_OR_OXYGEN in rounded:
        on_oxygen = rounded[Parameter.AIR_OR_OXYGEN] != _AIR

    scores: list[ParameterScore] = []
    for parameter, vital in VITAL_FOR_PARAMETER.items():
        reading = seen.get(parameter)
        value = rounded.get(parameter)
        score = None
        if value is not None:
            score = _parameter_score(parameter, value, spo2_scale2=spo2_scale2, on_oxygen=on_oxygen)
        scores.append(
            ParameterScore(
                parameter=parameter,
                code=vital.code,
                value=float(value) if value is not None else None,
                score=score,
                observed_at=reading.observed_at if reading is not None else None,
                stale=parameter in stale,
            )
        )

    total = sum(s.score for s in scores if s.score is not None)
    any_single_three = any(s.score == 3 for s in scores)
    risk, response = _risk_and_response(total=total, any_single_three=any_single_three)
    missing = tuple(s.parameter for s in scores if s.score is None)
    return News2Result(
        total=total,
        complete=not missing,
        missing=missing,
        parameters=tuple(scores),
        scale=2 if spo2_scale2 else 1,
        any_single_three=any_single_three,
        risk=risk,
        response=response,
    )


def _chart_round(value: float, *, decimals: int) -> Decimal:
    # str() gives the shortest repr that reads back as the same float: the number the device
    # or nurse meant (36.05), not its binary approximation (36.0499999...).
    return Decimal(str(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _in_bands(value: Decimal, bands: _Bands, *, above: int) -> int:
    for highest, score in bands:
        if value <= highest:
            return score
    return above


def _parameter_score(
    parameter: Parameter, value: Decimal, *, spo2_scale2: bool, on_oxygen: bool | None
) -> int:
    match parameter:
        case Parameter.RESPIRATORY_RATE:
            return _in_bands(value, _RESPIRATORY_RATE_BANDS, above=_RESPIRATORY_RATE_ABOVE)
        case Parameter.SPO2 if not spo2_scale2:
            return _in_bands(value, _SPO2_SCALE1_BANDS, above=_SPO2_SCALE1_ABOVE)
        case Parameter.SPO2:
            return _spo2_scale2_score(value, on_oxygen=on_oxygen)
        case Parameter.AIR_OR_OXYGEN:
            return 0 if value == _AIR else _ON_OXYGEN_SCORE
        case Parameter.SYSTOLIC_BP:
            return _in_bands(value, _SYSTOLIC_BP_BANDS, above=_SYSTOLIC_BP_ABOVE)
        case Parameter.PULSE:
            return _in_bands(value, _PULSE_BANDS, above=_PULSE_ABOVE)
        case Parameter.CONSCIOUSNESS:
            return 0 if value == _ALERT else _NOT_ALERT_SCORE
        case Parameter.TEMPERATURE:
            return _in_bands(value, _TEMPERATURE_BANDS, above=_TEMPERATURE_ABOVE)
    raise AssertionError(f"unknown NEWS2 parameter {parameter!r}")


def _spo2_scale2_score(value: Decimal, *, on_oxygen: bool | None) -> int:
    # on_oxygen None (air/oxygen missing or stale) is scored as on oxygen, the higher score, so
    # that not knowing can raise an alarm but never hide one.
    if value >= _SPO2_SCALE2_ON_OXYGEN_FROM and on_oxygen is not False:
        return _in_bands(value, _SPO2_SCALE2_ON_OXYGEN_BANDS, above=_SPO2_SCALE2_ON_OXYGEN_ABOVE)
    return _in_bands(value, _SPO2_SCALE2_BANDS, above=_SPO2_SCALE2_ABOVE)


def _risk_and_response(*, total: int, any_single_three: bool) -> tuple[Risk, str]:
    # The highest applicable row of the table wins.
    if total >= _HIGH_FROM:
        return Risk.HIGH, _RESPONSE_HIGH
    if total >= _MEDIUM_FROM:
        return Risk.MEDIUM, _RESPONSE_MEDIUM
    if any_single_three:
        return Risk.LOW_MEDIUM, _RESPONSE_SINGLE_THREE
    if total == 0:
        return Risk.LOW, _RESPONSE_AGGREGATE_ZERO
    return Risk.LOW, _RESPONSE_AGGREGATE_LOW
