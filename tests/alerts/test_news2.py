"""NEWS2 scoring (alerts/news2.py) against the chart in ../shared/clinical.md.

Plain unit tests: the scorer is pure, so no database is needed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from alerts.news2 import (
    News2Result,
    ParameterScore,
    ParameterValue,
    Risk,
    news2_score,
)
from monitoring import vitals

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)

RR = vitals.RESPIRATORY_RATE.code
SPO2 = vitals.SPO2.code
O2 = vitals.SUPPLEMENTAL_OXYGEN.code
SBP = vitals.SYSTOLIC_BP.code
HR = vitals.HEART_RATE.code
ACVPU = vitals.CONSCIOUSNESS.code
TEMP = vitals.BODY_TEMPERATURE.code

AIR, OXYGEN = 0, 1
ALERT, CONFUSION, VOICE, PAIN, UNRESPONSIVE = 0, 1, 2, 3, 4

CHART_ORDER = (
    "respiratory_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)
PARAMETER_OF = dict(zip((RR, SPO2, O2, SBP, HR, ACVPU, TEMP), CHART_ORDER, strict=True))

# Every parameter scoring 0.
NORMAL = {RR: 16, SPO2: 98, O2: AIR, SBP: 120, HR: 70, ACVPU: ALERT, TEMP: 37.0}

RESPONSE_AGGREGATE_ZERO = "observations at least every 12 h"
RESPONSE_AGGREGATE_LOW = "at least every 4–6 h; registered nurse assesses"
RESPONSE_SINGLE_THREE = "at least hourly; urgent review by the ward's medical team"
RESPONSE_MEDIUM = "at least hourly; urgent review by a clinician with acute-care skills"
RESPONSE_HIGH = (
    "continuous monitoring; emergency assessment by a critical-care team; "
    "consider transfer to HDU/ICU"
)


def _reading(code: str, value: float, *, age: timedelta = timedelta(0)) -> ParameterValue:
    return ParameterValue(code=code, value=value, observed_at=NOW - age)


def _latest(values: dict[str, float], **ages: timedelta) -> dict[str, ParameterValue]:
    """Readings observed at NOW, except those whose code is given an age (by parameter name)."""
    return {
        code: _reading(code, value, age=ages.get(PARAMETER_OF[code], timedelta(0)))
        for code, value in values.items()
    }


def _score(
    changes: dict[str, float] | None = None,
    *,
    spo2_scale2: bool = False,
    drop: tuple[str, ...] = (),
    **ages: timedelta,
) -> News2Result:
    """Score NORMAL with ``changes`` applied and the codes in ``drop`` left out."""
    values = {**NORMAL, **(changes or {})}
    for code in drop:
        del values[code]
    return news2_score(latest=_latest(values, **ages), now=NOW, spo2_scale2=spo2_scale2)


def _parameter(result: News2Result, name: str) -> ParameterScore:
    (found,) = [p for p in result.parameters if p.parameter == name]
    return found


# --- the chart, both sides of every band edge --------------------------------------------


@pytest.mark.parametrize(
    ("code", "value", "expected"),
    [
        # respiratory rate: ≤8 →3, 9–11 →1, 12–20 →0, 21–24 →2, ≥25 →3
        (RR, 0, 3),
        (RR, 8, 3),
        (RR, 9, 1),
        (RR, 11, 1),
        (RR, 12, 0),
        (RR, 20, 0),
        (RR, 21, 2),
        (RR, 24, 2),
        (RR, 25, 3),
        (RR, 60, 3),
        # SpO2 scale 1: ≤91 →3, 92–93 →2, 94–95 →1, ≥96 →0
        (SPO2, 0, 3),
        (SPO2, 91, 3),
        (SPO2, 92, 2),
        (SPO2, 93, 2),
        (SPO2, 94, 1),
        (SPO2, 95, 1),
        (SPO2, 96, 0),
        (SPO2, 100, 0),
        # air or oxygen: air →0, oxygen →2
        (O2, AIR, 0),
        (O2, OXYGEN, 2),
        # systolic BP: ≤90 →3, 91–100 →2, 101–110 →1, 111–219 →0, ≥220 →3
        (SBP, 0, 3),
        (SBP, 90, 3),
        (SBP, 91, 2),
        (SBP, 100, 2),
        (SBP, 101, 1),
        (SBP, 110, 1),
        (SBP, 111, 0),
        (SBP, 219, 0),
        (SBP, 220, 3),
        (SBP, 300, 3),
        # pulse: ≤40 →3, 41–50 →1, 51–90 →0, 91–110 →1, 111–130 →2, ≥131 →3
        (HR, 0, 3),
        (HR, 40, 3),
        (HR, 41, 1),
        (HR, 50, 1),
        (HR, 51, 0),
        (HR, 90, 0),
        (HR, 91, 1),
        (HR, 110, 1),
        (HR, 111, 2),
        (HR, 130, 2),
        (HR, 131, 3),
        (HR, 250, 3),
        # consciousness: Alert →0; new confusion, V, P or U →3
        (ACVPU, ALERT, 0),
        (ACVPU, CONFUSION, 3),
        (ACVPU, VOICE, 3),
        (ACVPU, PAIN, 3),
        (ACVPU, UNRESPONSIVE, 3),
        # temperature: ≤35.0 →3, 35.1–36.0 →1, 36.1–38.0 →0, 38.1–39.0 →1, ≥39.1 →2
        (TEMP, 25.0, 3),
        (TEMP, 35.0, 3),
        (TEMP, 35.1, 1),
        (TEMP, 36.0, 1),
        (TEMP, 36.1, 0),
        (TEMP, 38.0, 0),
        (TEMP, 38.1, 1),
        (TEMP, 39.0, 1),
        (TEMP, 39.1, 2),
        (TEMP, 45.0, 2),
    ],
)
def test_it_scores_each_parameter_by_the_chart(code: str, value: float, expected: int) -> None:
    result = _score({code: value})

    scored = _parameter(result, PARAMETER_OF[code])
    assert scored.score == expected
    assert scored.value == value
    assert scored.code == code
    assert result.total == expected
    assert result.complete
    assert result.scale == 1


@pytest.mark.parametrize(
    ("spo2", "on_air", "on_oxygen"),
    [
        (70, 3, 3),
        (83, 3, 3),
        (84, 2, 2),
        (85, 2, 2),
        (86, 1, 1),
        (87, 1, 1),
        (88, 0, 0),
        (92, 0, 0),
        (93, 0, 1),
        (94, 0, 1),
        (95, 0, 2),
        (96, 0, 2),
        (97, 0, 3),
        (100, 0, 3),
    ],
)
def test_it_scores_spo2_on_scale_2_on_air_and_on_oxygen(
    spo2: int, on_air: int, on_oxygen: int
) -> None:
    air = _score({SPO2: spo2, O2: AIR}, spo2_scale2=True)
    oxygen = _score({SPO2: spo2, O2: OXYGEN}, spo2_scale2=True)

    assert _parameter(air, "spo2").score == on_air
    assert _parameter(oxygen, "spo2").score == on_oxygen
    # Air or oxygen is still scored on its own (oxygen 2).
    assert air.total == on_air
    assert oxygen.total == on_oxygen + 2
    assert air.scale == oxygen.scale == 2
    assert air.complete and oxygen.complete


@pytest.mark.parametrize(
    ("spo2", "expected"),
    [(83, 3), (84, 2), (87, 1), (88, 0), (92, 0), (93, 1), (94, 1), (95, 2), (96, 2), (97, 3)],
)
@pytest.mark.parametrize("o2", ["missing", "stale"])
def test_it_scores_scale_2_as_on_oxygen_when_air_or_oxygen_is_unknown(
    spo2: int, expected: int, o2: str
) -> None:
    if o2 == "missing":
        result = _score({SPO2: spo2}, spo2_scale2=True, drop=(O2,))
    else:
        # A nurse recorded "air" too long ago to trust it.
        result = _score(
            {SPO2: spo2, O2: AIR}, spo2_scale2=True, air_or_oxygen=timedelta(hours=12, seconds=1)
        )

    assert _parameter(result, "spo2").score == expected
    assert _parameter(result, "air_or_oxygen").score is None
    assert result.missing == ("air_or_oxygen",)
    assert not result.complete
    assert result.total == expected


@pytest.mark.parametrize(
    ("spo2", "o2", "expected"),
    [(88, AIR, 3), (88, OXYGEN, 3), (97, OXYGEN, 0), (93, OXYGEN, 2)],
)
def test_it_ignores_oxygen_for_spo2_on_scale_1(spo2: int, o2: int, expected: int) -> None:
    result = _score({SPO2: spo2, O2: o2}, spo2_scale2=False)

    assert _parameter(result, "spo2").score == expected
    assert result.scale == 1


# --- rounding to the chart's precision, half up ------------------------------------------


@pytest.mark.parametrize(
    ("code", "raw", "rounded", "expected"),
    [
        (RR, 20.5, 21, 2),  # banker's rounding would give 20 → 0
        (RR, 20.4999, 20, 0),
        (RR, 8.5, 9, 1),
        (RR, 24.5, 25, 3),
        (SBP, 90.5, 91, 2),  # banker's rounding would give 90 → 3
        (SBP, 90.4999, 90, 3),
        (SBP, 219.5, 220, 3),
        (HR, 90.5, 91, 1),
        (HR, 40.5, 41, 1),
        (SPO2, 91.4999, 91, 3),
        (SPO2, 91.5, 92, 2),
        (SPO2, 95.5, 96, 0),
        (TEMP, 35.05, 35.1, 1),
        (TEMP, 35.0499, 35.0, 3),
        (TEMP, 36.05, 36.1, 0),  # the float is 36.0499999…: a naive Decimal(float) gives 36.0
        (TEMP, 38.05, 38.1, 1),
        (TEMP, 39.05, 39.1, 2),
        (TEMP, 37.04, 37.0, 0),
    ],
)
def test_it_rounds_half_up_to_the_chart_precision_before_scoring(
    code: str, raw: float, rounded: float, expected: int
) -> None:
    result = _score({code: raw})

    scored = _parameter(result, PARAMETER_OF[code])
    assert scored.value == rounded
    assert scored.score == expected


def test_it_rounds_nurse_entered_codes_before_reading_them() -> None:
    result = _score({O2: 0.4, ACVPU: 0.5})

    assert _parameter(result, "air_or_oxygen").score == 0
    assert _parameter(result, "consciousness").value == 1
    assert _parameter(result, "consciousness").score == 3


# --- aggregate, single 3, risk and response ----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "total", "risk", "response"),
    [
        ({}, 0, Risk.LOW, RESPONSE_AGGREGATE_ZERO),
        ({TEMP: 38.1}, 1, Risk.LOW, RESPONSE_AGGREGATE_LOW),
        ({RR: 21, HR: 111}, 4, Risk.LOW, RESPONSE_AGGREGATE_LOW),
        ({RR: 21, HR: 111, TEMP: 38.1}, 5, Risk.MEDIUM, RESPONSE_MEDIUM),
        ({RR: 21, HR: 111, TEMP: 38.1, SBP: 101}, 6, Risk.MEDIUM, RESPONSE_MEDIUM),
        ({RR: 21, HR: 111, TEMP: 38.1, SBP: 101, SPO2: 95}, 7, Risk.HIGH, RESPONSE_HIGH),
        (
            {RR: 25, HR: 131, SBP: 90, ACVPU: VOICE, O2: OXYGEN, TEMP: 35.0, SPO2: 91},
            20,
            Risk.HIGH,
            RESPONSE_HIGH,
        ),
    ],
)
def test_it_maps_the_aggregate_to_risk_and_response(
    changes: dict[str, float], total: int, risk: Risk, response: str
) -> None:
    result = _score(changes)

    assert result.total == total
    assert result.risk == risk
    assert result.response == response
    assert result.complete


def test_it_rates_a_single_three_as_low_medium() -> None:
    result = _score({RR: 25})

    assert result.total == 3
    assert result.any_single_three
    assert result.risk == Risk.LOW_MEDIUM
    assert result.risk == "low-medium"
    assert result.response == RESPONSE_SINGLE_THREE


def test_it_rates_three_ones_as_low() -> None:
    result = _score({RR: 9, HR: 91, TEMP: 38.1})

    assert result.total == 3
    assert not result.any_single_three
    assert result.risk == Risk.LOW
    assert result.response == RESPONSE_AGGREGATE_LOW


@pytest.mark.parametrize(
    ("changes", "total", "risk", "response"),
    [
        ({ACVPU: CONFUSION}, 3, Risk.LOW_MEDIUM, RESPONSE_SINGLE_THREE),
        ({ACVPU: CONFUSION, TEMP: 38.1}, 4, Risk.LOW_MEDIUM, RESPONSE_SINGLE_THREE),
        # The highest applicable row wins: 5–6 and ≥7 outrank a single 3.
        ({ACVPU: CONFUSION, RR: 21}, 5, Risk.MEDIUM, RESPONSE_MEDIUM),
        ({ACVPU: CONFUSION, RR: 21, HR: 91}, 6, Risk.MEDIUM, RESPONSE_MEDIUM),
        ({ACVPU: CONFUSION, RR: 21, HR: 111}, 7, Risk.HIGH, RESPONSE_HIGH),
    ],
)
def test_it_lets_the_highest_applicable_risk_win_over_a_single_three(
    changes: dict[str, float], total: int, risk: Risk, response: str
) -> None:
    result = _score(changes)

    assert result.any_single_three
    assert result.total == total
    assert result.risk == risk
    assert result.response == response


def test_it_counts_a_conservative_scale_2_three_as_a_single_three() -> None:
    result = _score({SPO2: 97}, spo2_scale2=True, drop=(O2,))

    assert result.any_single_three
    assert result.risk == Risk.LOW_MEDIUM


# --- freshness ---------------------------------------------------------------------------

ABNORMAL = {RR: 25, SPO2: 91, O2: OXYGEN, SBP: 90, HR: 131, ACVPU: VOICE, TEMP: 35.0}
ABNORMAL_SCORE = {RR: 3, SPO2: 3, O2: 2, SBP: 3, HR: 3, ACVPU: 3, TEMP: 3}
WINDOW = {
    RR: timedelta(minutes=5),
    SPO2: timedelta(minutes=5),
    SBP: timedelta(minutes=5),
    HR: timedelta(minutes=5),
    TEMP: timedelta(minutes=5),
    O2: timedelta(hours=12),
    ACVPU: timedelta(hours=12),
}


@pytest.mark.parametrize("code", list(WINDOW))
def test_it_counts_a_value_exactly_as_old_as_its_window(code: str) -> None:
    result = _score({code: ABNORMAL[code]}, **{PARAMETER_OF[code]: WINDOW[code]})

    scored = _parameter(result, PARAMETER_OF[code])
    assert scored.score == ABNORMAL_SCORE[code]
    assert not scored.stale
    assert result.total == ABNORMAL_SCORE[code]
    assert result.complete
    assert result.missing == ()


@pytest.mark.parametrize("code", list(WINDOW))
def test_it_treats_a_value_older_than_its_window_as_stale_and_missing(code: str) -> None:
    age = WINDOW[code] + timedelta(seconds=1)

    result = _score({code: ABNORMAL[code]}, **{PARAMETER_OF[code]: age})

    scored = _parameter(result, PARAMETER_OF[code])
    assert scored.stale
    assert scored.score is None
    assert scored.value is None
    assert scored.observed_at == NOW - age  # so its age can still be shown
    assert result.total == 0  # excluded, not scored as 0 and not scored as abnormal
    assert not result.complete
    assert result.missing == (PARAMETER_OF[code],)


def test_it_counts_a_value_from_the_future_as_fresh() -> None:
    # Device clock ahead of the server's.
    latest = _latest({**NORMAL, RR: 25})
    latest[RR] = _reading(RR, 25, age=-timedelta(minutes=2))

    result = news2_score(latest=latest, now=NOW, spo2_scale2=False)

    assert _parameter(result, "respiratory_rate").score == 3
    assert not _parameter(result, "respiratory_rate").stale
    assert result.complete


def test_it_excludes_stale_values_from_the_total_but_keeps_fresh_ones() -> None:
    result = _score(
        {RR: 25, HR: 131, ACVPU: VOICE},
        pulse=timedelta(minutes=6),
        consciousness=timedelta(hours=13),
    )

    assert result.total == 3
    assert result.missing == ("pulse", "consciousness")
    assert result.risk == Risk.LOW_MEDIUM


# --- missing and unusable inputs ---------------------------------------------------------


@pytest.mark.parametrize("code", list(NORMAL))
def test_it_lists_a_missing_parameter_and_reports_incomplete(code: str) -> None:
    result = _score(drop=(code,))

    scored = _parameter(result, PARAMETER_OF[code])
    assert scored == ParameterScore(
        parameter=PARAMETER_OF[code],
        code=code,
        value=None,
        score=None,
        observed_at=None,
        stale=False,
    )
    assert result.missing == (PARAMETER_OF[code],)
    assert not result.complete
    assert result.total == 0


def test_it_scores_nothing_when_everything_is_missing() -> None:
    result = news2_score(latest={}, now=NOW, spo2_scale2=False)

    assert result.total == 0
    assert not result.complete
    assert result.missing == CHART_ORDER
    assert all(p.score is None and p.value is None for p in result.parameters)
    assert not result.any_single_three


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_it_treats_a_value_that_is_not_a_number_as_missing(value: float) -> None:
    result = _score({HR: value})

    assert _parameter(result, "pulse").score is None
    assert result.missing == ("pulse",)
    assert not result.complete


def test_it_returns_the_parameters_in_chart_order_with_their_catalogue_codes() -> None:
    result = _score()

    assert tuple(p.parameter for p in result.parameters) == CHART_ORDER
    assert tuple(p.code for p in result.parameters) == (RR, SPO2, O2, SBP, HR, ACVPU, TEMP)
    assert all(p.observed_at == NOW for p in result.parameters)
    assert result.complete
    assert result.missing == ()


def test_it_scores_pulse_from_heart_rate_and_ignores_other_codes() -> None:
    latest = _latest(NORMAL)
    latest[vitals.DIASTOLIC_BP.code] = _reading(vitals.DIASTOLIC_BP.code, 20)
    latest[vitals.MEAN_ARTERIAL_PRESSURE.code] = _reading(vitals.MEAN_ARTERIAL_PRESSURE.code, 30)
    latest[HR] = _reading(HR, 131)

    result = news2_score(latest=latest, now=NOW, spo2_scale2=False)

    assert _parameter(result, "pulse").code == "8867-4"
    assert _parameter(result, "pulse").score == 3
    assert result.total == 3


def test_it_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        news2_score(latest={}, now=NOW.replace(tzinfo=None), spo2_scale2=False)
