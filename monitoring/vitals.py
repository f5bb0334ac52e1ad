"""The catalogue of vital signs: LOINC code, UCUM unit, IEEE 11073 MDC code, plausibility.

The one place in code that names a vital sign. Source: ../shared/clinical.md.

Plausibility bands reject *input errors*, not alarming values: they are deliberately wide
enough for any live patient (neonates to adults), because a reading rejected here is a
reading no alarm can fire on. clinical.md gives heart rate 0–350 /min, SpO2 0–100 %,
temperature 25–45 Cel; the others are chosen by the same rule and documented here:
respiratory rate 0–150 /min (neonatal tachypnoea stays far below), systolic BP 0–400 mm[Hg],
diastolic BP 0–300 mm[Hg], mean arterial pressure 0–350 mm[Hg] (above any recorded
hypertensive crisis).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class CodeSystem(StrEnum):
    LOINC = "http://loinc.org"
    # Codes the portal defines itself, for nurse-entered NEWS2 inputs that have no verified
    # LOINC code in clinical.md.
    LOCAL = "urn:portal:local"


@dataclass(frozen=True, slots=True)
class Vital:
    code: str
    system: CodeSystem
    name: str
    short_name: str
    unit: str  # the canonical UCUM unit every stored value is in
    mdc_code: int | None
    mdc_name: str
    plausible_min: float
    plausible_max: float
    decimals: int  # the chart's precision; NEWS2 rounds to this before scoring
    # Other UCUM units a device may send, with the conversion to the canonical unit.
    conversions: dict[str, Callable[[float], float]] = field(default_factory=dict)
    posted_by_devices: bool = True

    def to_canonical(self, value: float, unit: str) -> float:
        """Return ``value`` in the canonical unit; raise KeyError for an unknown unit."""
        if unit == self.unit:
            return value
        return self.conversions[unit](value)

    @property
    def accepted_units(self) -> tuple[str, ...]:
        return (self.unit, *self.conversions)


def _fahrenheit_to_celsius(value: float) -> float:
    return round((value - 32.0) * 5.0 / 9.0, 2)


HEART_RATE = Vital(
    code="8867-4",
    system=CodeSystem.LOINC,
    name="Heart rate",
    short_name="HR",
    unit="/min",
    mdc_code=147842,
    mdc_name="MDC_ECG_HEART_RATE",
    plausible_min=0,
    plausible_max=350,
    decimals=0,
)
RESPIRATORY_RATE = Vital(
    code="9279-1",
    system=CodeSystem.LOINC,
    name="Respiratory rate",
    short_name="RR",
    unit="/min",
    mdc_code=151562,
    mdc_name="MDC_RESP_RATE",
    plausible_min=0,
    plausible_max=150,
    decimals=0,
)
SPO2 = Vital(
    code="59408-5",
    system=CodeSystem.LOINC,
    name="Oxygen saturation (pulse oximetry)",
    short_name="SpO2",
    unit="%",
    mdc_code=150456,
    mdc_name="MDC_PULS_OXIM_SAT_O2",
    plausible_min=0,
    plausible_max=100,
    decimals=0,
)
SYSTOLIC_BP = Vital(
    code="8480-6",
    system=CodeSystem.LOINC,
    name="Systolic blood pressure",
    short_name="SBP",
    unit="mm[Hg]",
    mdc_code=150021,
    mdc_name="MDC_PRESS_BLD_NONINV_SYS",
    plausible_min=0,
    plausible_max=400,
    decimals=0,
)
DIASTOLIC_BP = Vital(
    code="8462-4",
    system=CodeSystem.LOINC,
    name="Diastolic blood pressure",
    short_name="DBP",
    unit="mm[Hg]",
    mdc_code=150022,
    mdc_name="MDC_PRESS_BLD_NONINV_DIA",
    plausible_min=0,
    plausible_max=300,
    decimals=0,
)
MEAN_ARTERIAL_PRESSURE = Vital(
    code="8478-0",
    system=CodeSystem.LOINC,
    name="Mean arterial pressure",
    short_name="MAP",
    unit="mm[Hg]",
    mdc_code=150023,
    mdc_name="MDC_PRESS_BLD_NONINV_MEAN",
    plausible_min=0,
    plausible_max=350,
    decimals=0,
)
BODY_TEMPERATURE = Vital(
    code="8310-5",
    system=CodeSystem.LOINC,
    name="Body temperature",
    short_name="Temp",
    unit="Cel",
    mdc_code=150364,
    mdc_name="MDC_TEMP_BODY",
    plausible_min=25,
    plausible_max=45,
    decimals=1,
    conversions={"[degF]": _fahrenheit_to_celsius},
)
# Nurse-entered NEWS2 inputs (local codes, see CodeSystem.LOCAL).
# Supplemental oxygen: 0 = room air, 1 = supplemental oxygen.
SUPPLEMENTAL_OXYGEN = Vital(
    code="local-supplemental-o2",
    system=CodeSystem.LOCAL,
    name="Air or supplemental oxygen",
    short_name="O2",
    unit="{boolean}",
    mdc_code=None,
    mdc_name="",
    plausible_min=0,
    plausible_max=1,
    decimals=0,
    posted_by_devices=False,
)
# ACVPU: 0 = Alert, 1 = new Confusion, 2 = Voice, 3 = Pain, 4 = Unresponsive.
CONSCIOUSNESS = Vital(
    code="local-acvpu",
    system=CodeSystem.LOCAL,
    name="Level of consciousness (ACVPU)",
    short_name="ACVPU",
    unit="{score}",
    mdc_code=None,
    mdc_name="",
    plausible_min=0,
    plausible_max=4,
    decimals=0,
    posted_by_devices=False,
)

VITALS: dict[str, Vital] = {
    vital.code: vital
    for vital in (
        HEART_RATE,
        RESPIRATORY_RATE,
        SPO2,
        SYSTOLIC_BP,
        DIASTOLIC_BP,
        MEAN_ARTERIAL_PRESSURE,
        BODY_TEMPERATURE,
        SUPPLEMENTAL_OXYGEN,
        CONSCIOUSNESS,
    )
}
DEVICE_VITALS: dict[str, Vital] = {c: v for c, v in VITALS.items() if v.posted_by_devices}
CODE_CHOICES: list[tuple[str, str]] = [(v.code, f"{v.name} ({v.code})") for v in VITALS.values()]


def vital_for(code: str) -> Vital | None:
    return VITALS.get(code)
