"""The demo hospital: a fictional hospital loaded from ``fixtures/demo_hospital.json``.

DEMO ONLY. The file holds public passwords and the devices get public, deterministic tokens,
so the loader refuses to run in production mode.

The load is idempotent: every row is matched on its natural key (ward code, ward and bed
label, MRN, serial, username) and only changed fields are written, so a rerun writes nothing
and keeps every primary key. Set-up (names, which bed a device is attached to, the demo
logins and their passwords) is corrected back to the file; clinical state is not: a demo
patient is admitted only while they have no open admission, so if an administrator moved,
discharged-and-replaced or admitted them elsewhere, that stands. Ward access grants are only
ever added, never revoked.

The file's shape is strict: every key it may use is listed in its ``key_reference``, and any
other key is refused rather than silently ignored, so a typo cannot drop data unnoticed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models, transaction
from django.utils import timezone

from alerts.defaults import default_rules_ensure
from alerts.models import AlertRule, Priority
from alerts.news2 import NURSE_ENTERED_FRESHNESS
from monitoring.models import Device, Observation
from monitoring.services import TOKEN_PREFIX, device_token_store, observation_enter
from monitoring.vitals import CONSCIOUSNESS, DEVICE_VITALS, SUPPLEMENTAL_OXYGEN
from patients.models import Admission, Bed, Patient, Ward, WardAccess
from patients.services import AdmissionRefused, admission_create

DEFAULT_PATH = settings.BASE_DIR / "fixtures" / "demo_hospital.json"
FORMAT = 1

ADMINISTRATOR = "administrator"
CLINICIAN = "clinician"


class DemoLoadRefused(Exception):
    """The demo hospital may not be loaded here (production mode)."""


class DemoDataInvalid(Exception):
    """The demo file does not have the documented shape; the message names the bad key."""


def demo_device_token(serial: str) -> str:
    """The API token of a demo device, derived from its serial.

    DEMO ONLY: anyone can compute it, which is the point (the device simulator knows it without
    reading the database) and why the loader never runs in production.
    """
    return f"{TOKEN_PREFIX}demo_{serial.lower()}"


# --- The file, parsed ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoDevice:
    serial: str
    manufacturer: str
    model: str


@dataclass(frozen=True, slots=True)
class DemoPatient:
    mrn: str
    family_name: str
    given_name: str
    date_of_birth: dt.date
    sex: str
    news2_spo2_scale2: bool = False


@dataclass(frozen=True, slots=True)
class DemoRule:
    """A patient's own threshold rule (e.g. a COPD patient's SpO2 target)."""

    patient_mrn: str
    name: str
    code: str
    priority: str
    sustain_seconds: int
    low: float | None
    clear_low: float | None
    high: float | None
    clear_high: float | None


@dataclass(frozen=True, slots=True)
class DemoBed:
    label: str
    patient: DemoPatient | None
    device: DemoDevice | None


@dataclass(frozen=True, slots=True)
class DemoWard:
    code: str
    name: str
    beds: tuple[DemoBed, ...]


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    password: str
    role: str
    first_name: str
    last_name: str
    email: str
    wards: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DemoHospital:
    wards: tuple[DemoWard, ...]
    spare_devices: tuple[DemoDevice, ...]
    users: tuple[DemoUser, ...]
    rules: tuple[DemoRule, ...] = ()


def _keys(
    obj: object, where: str, *, required: set[str], optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise DemoDataInvalid(f"{where}: expected an object")
    # "notes" is free text for people reading the file, accepted on every object.
    unknown = set(obj) - required - optional - {"notes"}
    if unknown:
        raise DemoDataInvalid(
            f"{where}: undocumented key(s) {', '.join(sorted(unknown))}; see key_reference"
        )
    missing = required - set(obj)
    if missing:
        raise DemoDataInvalid(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    return obj


_T = TypeVar("_T")


def _typed(value: object, kind: type[_T], where: str) -> _T:
    if not isinstance(value, kind) or (kind is str and not value):
        raise DemoDataInvalid(f"{where}: expected a non-empty {kind.__name__}")
    return value


def _list(value: object, where: str) -> Sequence[Any]:
    return _typed(value, list, where)


def _parse_device(
    obj: object, where: str, device_types: Mapping[str, tuple[str, str]]
) -> DemoDevice:
    data = _keys(obj, where, required={"serial", "device_type"})
    device_type = _typed(data["device_type"], str, f"{where}.device_type")
    if device_type not in device_types:
        raise DemoDataInvalid(f"{where}.device_type: {device_type!r} is not in device_types")
    manufacturer, model = device_types[device_type]
    return DemoDevice(
        serial=_typed(data["serial"], str, f"{where}.serial"),
        manufacturer=manufacturer,
        model=model,
    )


def _parse_patient(obj: object, where: str) -> DemoPatient:
    data = _keys(
        obj,
        where,
        required={"mrn", "family_name", "given_name", "date_of_birth", "sex"},
        optional=frozenset({"news2_spo2_scale2"}),
    )
    try:
        date_of_birth = dt.date.fromisoformat(
            _typed(data["date_of_birth"], str, f"{where}.date_of_birth")
        )
    except ValueError as error:
        raise DemoDataInvalid(f"{where}.date_of_birth: expected YYYY-MM-DD") from error
    sex = _typed(data["sex"], str, f"{where}.sex")
    if sex not in Patient.Sex.values:
        raise DemoDataInvalid(f"{where}.sex: one of {', '.join(Patient.Sex.values)}")
    return DemoPatient(
        mrn=_typed(data["mrn"], str, f"{where}.mrn"),
        family_name=_typed(data["family_name"], str, f"{where}.family_name"),
        given_name=_typed(data["given_name"], str, f"{where}.given_name"),
        date_of_birth=date_of_birth,
        sex=sex,
        news2_spo2_scale2=_typed(
            data.get("news2_spo2_scale2", False), bool, f"{where}.news2_spo2_scale2"
        ),
    )


_RULE_LIMITS = ("low", "clear_low", "high", "clear_high")


def _parse_rule(obj: object, where: str) -> DemoRule:
    data = _keys(
        obj,
        where,
        required={"patient_mrn", "name", "code", "priority", "sustain_seconds"},
        optional=frozenset(_RULE_LIMITS),
    )
    code = _typed(data["code"], str, f"{where}.code")
    if code not in DEVICE_VITALS:
        raise DemoDataInvalid(f"{where}.code: not a device vital in the catalogue")
    priority = _typed(data["priority"], str, f"{where}.priority")
    if priority not in Priority.values:
        raise DemoDataInvalid(f"{where}.priority: one of {', '.join(Priority.values)}")
    limits = {}
    for name in _RULE_LIMITS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DemoDataInvalid(f"{where}.{name}: expected a number")
        limits[name] = float(value) if value is not None else None
    if limits["low"] is None and limits["high"] is None:
        raise DemoDataInvalid(f"{where}: a rule needs low and/or high")
    return DemoRule(
        patient_mrn=_typed(data["patient_mrn"], str, f"{where}.patient_mrn"),
        name=_typed(data["name"], str, f"{where}.name"),
        code=code,
        priority=priority,
        sustain_seconds=_typed(data["sustain_seconds"], int, f"{where}.sustain_seconds"),
        **limits,
    )


def _parse_ward(obj: object, where: str, device_types: Mapping[str, tuple[str, str]]) -> DemoWard:
    data = _keys(obj, where, required={"code", "name", "beds"})
    beds = []
    for index, bed_obj in enumerate(_list(data["beds"], f"{where}.beds")):
        bed_where = f"{where}.beds[{index}]"
        bed = _keys(
            bed_obj, bed_where, required={"label"}, optional=frozenset({"patient", "device"})
        )
        beds.append(
            DemoBed(
                label=_typed(bed["label"], str, f"{bed_where}.label"),
                patient=_parse_patient(bed["patient"], f"{bed_where}.patient")
                if "patient" in bed
                else None,
                device=_parse_device(bed["device"], f"{bed_where}.device", device_types)
                if "device" in bed
                else None,
            )
        )
    return DemoWard(
        code=_typed(data["code"], str, f"{where}.code"),
        name=_typed(data["name"], str, f"{where}.name"),
        beds=tuple(beds),
    )


def _parse_user(obj: object, where: str, ward_codes: set[str]) -> DemoUser:
    data = _keys(
        obj,
        where,
        required={"username", "password", "role", "first_name", "last_name", "email", "wards"},
    )
    role = _typed(data["role"], str, f"{where}.role")
    wards = tuple(
        _typed(code, str, f"{where}.wards[]") for code in _list(data["wards"], f"{where}.wards")
    )
    if role not in {ADMINISTRATOR, CLINICIAN}:
        raise DemoDataInvalid(f"{where}.role: {ADMINISTRATOR} or {CLINICIAN}")
    # An administrator sees every ward anyway; a clinician without a ward would see nothing.
    if role == ADMINISTRATOR and wards:
        raise DemoDataInvalid(f"{where}.wards: an administrator lists no wards")
    if role == CLINICIAN and not wards:
        raise DemoDataInvalid(f"{where}.wards: a clinician needs at least one ward")
    if unknown := set(wards) - ward_codes:
        raise DemoDataInvalid(f"{where}.wards: no such ward(s) {', '.join(sorted(unknown))}")
    return DemoUser(
        username=_typed(data["username"], str, f"{where}.username"),
        password=_typed(data["password"], str, f"{where}.password"),
        role=role,
        first_name=_typed(data["first_name"], str, f"{where}.first_name"),
        last_name=_typed(data["last_name"], str, f"{where}.last_name"),
        email=_typed(data["email"], str, f"{where}.email"),
        wards=wards,
    )


def _refuse_duplicates(values: Sequence[object], what: str) -> None:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise DemoDataInvalid(f"{what} {value!r} appears twice")
        seen.add(value)


def demo_hospital_parse(*, path: Path) -> DemoHospital:
    """Read and validate the demo file, without touching the database."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DemoDataInvalid(f"{path}: {error}") from error
    top = _keys(
        document,
        "(top level)",
        required={"format", "device_types", "wards", "spare_devices", "users", "alert_rules"},
        optional=frozenset({"about", "key_reference"}),
    )
    if type(top["format"]) is not int or top["format"] != FORMAT:
        raise DemoDataInvalid(f"format: this loader reads format {FORMAT}")
    rules = tuple(
        _parse_rule(rule, f"alert_rules[{index}]")
        for index, rule in enumerate(_list(top["alert_rules"], "alert_rules"))
    )

    device_types: dict[str, tuple[str, str]] = {}
    for name, kind in _typed(top["device_types"], dict, "device_types").items():
        data = _keys(kind, f"device_types.{name}", required={"manufacturer", "model"})
        device_types[name] = (
            _typed(data["manufacturer"], str, f"device_types.{name}.manufacturer"),
            _typed(data["model"], str, f"device_types.{name}.model"),
        )

    wards = tuple(
        _parse_ward(ward, f"wards[{index}]", device_types)
        for index, ward in enumerate(_list(top["wards"], "wards"))
    )
    spare_devices = tuple(
        _parse_device(device, f"spare_devices[{index}]", device_types)
        for index, device in enumerate(_list(top["spare_devices"], "spare_devices"))
    )
    ward_codes = {ward.code for ward in wards}
    users = tuple(
        _parse_user(user, f"users[{index}]", ward_codes)
        for index, user in enumerate(_list(top["users"], "users"))
    )

    beds = [(ward, bed) for ward in wards for bed in ward.beds]
    _refuse_duplicates([ward.code for ward in wards], "ward code")
    _refuse_duplicates([(ward.code, bed.label) for ward, bed in beds], "bed")
    _refuse_duplicates([bed.patient.mrn for _, bed in beds if bed.patient], "MRN")
    _refuse_duplicates(
        [bed.device.serial for _, bed in beds if bed.device]
        + [device.serial for device in spare_devices],
        "device serial",
    )
    _refuse_duplicates([user.username for user in users], "username")
    mrns = {bed.patient.mrn for _, bed in beds if bed.patient}
    for index, rule in enumerate(rules):
        if rule.patient_mrn not in mrns:
            raise DemoDataInvalid(f"alert_rules[{index}].patient_mrn: no such demo patient")
    _refuse_duplicates([(rule.patient_mrn, rule.name) for rule in rules], "alert rule")
    return DemoHospital(wards=wards, spare_devices=spare_devices, users=users, rules=rules)


# --- Loading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoLogin:
    username: str
    password: str
    role: str
    wards: tuple[str, ...]


@dataclass(slots=True)
class DemoSummary:
    """What the demo hospital holds, and what this run had to create or correct."""

    wards: int = 0
    beds: int = 0
    patients: int = 0
    devices: int = 0
    users: int = 0
    created: int = 0
    updated: int = 0
    admissions_created: int = 0
    tokens_issued: int = 0
    passwords_reset: int = 0
    staff_observations: int = 0
    # Demo patients left as an administrator arranged them, with the reason.
    admissions_left_alone: list[str] = field(default_factory=list)
    logins: list[DemoLogin] = field(default_factory=list)


_M = TypeVar("_M", bound=models.Model)


def _ensure(
    model: type[_M], *, lookup: dict[str, Any], values: dict[str, Any], summary: DemoSummary
) -> _M:
    """get_or_create, then write only the fields that differ.

    Unlike update_or_create, which always saves, a rerun over unchanged rows writes nothing.
    ``values`` uses attnames (``bed_id``) so comparing them loads no related rows.
    """
    row, created = model._default_manager.get_or_create(**lookup, defaults=values)
    if created:
        summary.created += 1
        return row
    changed = [name for name, value in values.items() if getattr(row, name) != value]
    if changed:
        for name in changed:
            setattr(row, name, values[name])
        row.save(update_fields=changed)
        summary.updated += 1
    return row


def _ensure_device(*, device: DemoDevice, bed: Bed | None, summary: DemoSummary) -> None:
    row = _ensure(
        Device,
        lookup={"serial": device.serial},
        values={
            "manufacturer": device.manufacturer,
            "model": device.model,
            "bed_id": bed.pk if bed else None,
            "active": True,
        },
        summary=summary,
    )
    # Only a new digest is a new token; keeping issued_at otherwise is what makes reruns
    # leave the row as it was.
    if device_token_store(device=row, token=demo_device_token(device.serial)):
        summary.tokens_issued += 1
    summary.devices += 1


def _ensure_admitted(*, patient: Patient, bed: Bed, summary: DemoSummary) -> None:
    current = (
        Admission.objects.filter(patient=patient, discharged_at__isnull=True)
        .select_related("bed__ward")
        .first()
    )
    if current is not None:
        if current.bed_id != bed.pk:
            summary.admissions_left_alone.append(
                f"{patient.mrn} stays in {current.bed} (declared {bed})"
            )
        return
    try:
        admission_create(patient=patient, bed=bed)
    except AdmissionRefused as refusal:
        # Only "bed_occupied" can happen here: someone else was admitted to the demo bed.
        summary.admissions_left_alone.append(f"{patient.mrn} not admitted: {refusal.detail}")
        return
    summary.admissions_created += 1


def _ensure_user(*, user: DemoUser, wards: Mapping[str, Ward], summary: DemoSummary) -> None:
    is_administrator = user.role == ADMINISTRATOR
    row = _ensure(
        User,
        lookup={"username": user.username},
        values={
            "first_name": user.first_name,
            "last_name": user.last_name,
            "email": user.email,
            "is_active": True,
            "is_staff": is_administrator,
            "is_superuser": is_administrator,
        },
        summary=summary,
    )
    # check_password first so a rerun does not re-hash (a new salt would rewrite the row);
    # a changed password is reset so the documented logins keep working.
    if not row.check_password(user.password):
        row.set_password(user.password)
        row.save(update_fields=["password"])
        summary.passwords_reset += 1
    # Grants are only added: revoking one is a governance act for an administrator, not a
    # side effect of reloading the demo.
    for code in user.wards:
        _ensure(WardAccess, lookup={"user": row, "ward": wards[code]}, values={}, summary=summary)
    summary.users += 1
    summary.logins.append(
        DemoLogin(username=user.username, password=user.password, role=user.role, wards=user.wards)
    )


def _ensure_staff_observations(*, summary: DemoSummary) -> None:
    """Record "on air" and "alert" for each admitted demo patient, as the admitting nurse
    would: NEWS2 needs both, and without them every score would show as incomplete (and a
    scale-2 patient's SpO2 would be scored as if on oxygen). Only where none is recent, so a
    rerun adds nothing."""
    nurse = User.objects.filter(is_superuser=True).order_by("pk").first()
    recent = timezone.now() - NURSE_ENTERED_FRESHNESS
    admitted = Patient.objects.filter(
        mrn__startswith="DEMO", admissions__discharged_at__isnull=True
    ).distinct()
    for patient in admitted:
        for code in (SUPPLEMENTAL_OXYGEN.code, CONSCIOUSNESS.code):
            if not Observation.objects.filter(
                patient=patient, code=code, observed_at__gte=recent
            ).exists():
                observation_enter(patient=patient, code=code, value=0, user=nurse)
                summary.staff_observations += 1


def demo_hospital_load(*, path: Path) -> DemoSummary:
    """Create or correct the demo hospital described in ``path``, in one transaction.

    Refused in production mode (DemoLoadRefused) and for a malformed file (DemoDataInvalid),
    in both cases before anything is written.
    """
    if settings.PORTAL_MODE == "production":
        raise DemoLoadRefused(
            "Refusing to load the demo hospital in production mode (PORTAL_MODE=production): "
            "it carries public demo passwords and device tokens."
        )
    hospital = demo_hospital_parse(path=path)
    summary = DemoSummary()
    with transaction.atomic():
        wards: dict[str, Ward] = {}
        for demo_ward in hospital.wards:
            ward = _ensure(
                Ward,
                lookup={"code": demo_ward.code},
                values={"name": demo_ward.name},
                summary=summary,
            )
            wards[ward.code] = ward
            summary.wards += 1
            for demo_bed in demo_ward.beds:
                bed = _ensure(
                    Bed, lookup={"ward": ward, "label": demo_bed.label}, values={}, summary=summary
                )
                summary.beds += 1
                if demo_bed.device is not None:
                    _ensure_device(device=demo_bed.device, bed=bed, summary=summary)
                if demo_bed.patient is not None:
                    demo_patient = demo_bed.patient
                    patient = _ensure(
                        Patient,
                        lookup={"mrn": demo_patient.mrn},
                        values={
                            "family_name": demo_patient.family_name,
                            "given_name": demo_patient.given_name,
                            "date_of_birth": demo_patient.date_of_birth,
                            "sex": demo_patient.sex,
                            "news2_spo2_scale2": demo_patient.news2_spo2_scale2,
                        },
                        summary=summary,
                    )
                    summary.patients += 1
                    _ensure_admitted(patient=patient, bed=bed, summary=summary)
        for device in hospital.spare_devices:
            _ensure_device(device=device, bed=None, summary=summary)
        for user in hospital.users:
            _ensure_user(user=user, wards=wards, summary=summary)
        _ensure_staff_observations(summary=summary)
        # The hospital defaults come with the alerts app's migrations; the demo adds only
        # patients' own rules (a transactional test may have flushed the defaults: restore).
        default_rules_ensure(AlertRule)
        for rule in hospital.rules:
            _ensure(
                AlertRule,
                lookup={"patient": Patient.objects.get(mrn=rule.patient_mrn), "name": rule.name},
                values={
                    "kind": AlertRule.Kind.THRESHOLD,
                    "code": rule.code,
                    "priority": rule.priority,
                    "sustain_seconds": rule.sustain_seconds,
                    "low": rule.low,
                    "clear_low": rule.clear_low,
                    "high": rule.high,
                    "clear_high": rule.clear_high,
                    "enabled": True,
                },
                summary=summary,
            )
    return summary
