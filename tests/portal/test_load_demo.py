"""The demo hospital loader, driven through ``manage.py load_demo``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory, override_settings

from alerts.models import AlertRule
from alerts.selectors import rules_effective_for
from monitoring.models import Device, token_digest
from patients.models import Admission, Bed, Patient, Ward, WardAccess
from patients.selectors import wards_visible_to
from patients.services import admission_create, admission_discharge, admission_transfer
from portal.demo import DEFAULT_PATH, demo_device_token
from tests import factories

TOUCHED_MODELS = (Ward, Bed, Patient, Admission, Device, User, WardAccess, AlertRule)


def _demo_file() -> dict[str, Any]:
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _load(path: Path | None = None) -> str:
    out = io.StringIO()
    if path is None:
        call_command("load_demo", stdout=out)
    else:
        call_command("load_demo", path=str(path), stdout=out)
    return out.getvalue()


def _snapshot() -> dict[str, list[dict[str, Any]]]:
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in TOUCHED_MODELS}


def _declared_beds(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(ward["code"], bed) for ward in document["wards"] for bed in ward["beds"]]


def _open_admission(mrn: str) -> Admission | None:
    return (
        Admission.objects.filter(patient__mrn=mrn, discharged_at__isnull=True)
        .select_related("bed__ward")
        .first()
    )


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.django_db
def test_it_loads_the_hospital_the_file_declares() -> None:
    document = _demo_file()
    _load()

    assert len(document["wards"]) >= 3
    assert Ward.objects.count() == len(document["wards"])
    for ward in document["wards"]:
        beds = Bed.objects.filter(ward__code=ward["code"])
        assert beds.count() == len(ward["beds"]) == 12
        occupied = [bed for bed in ward["beds"] if "patient" in bed]
        assert len(occupied) > len(ward["beds"]) / 2
        for declared in ward["beds"]:
            bed = beds.get(label=declared["label"])
            devices = list(Device.objects.filter(bed=bed))
            admission = Admission.objects.filter(bed=bed, discharged_at__isnull=True).first()
            if "patient" in declared:
                assert admission is not None
                assert admission.patient.mrn == declared["patient"]["mrn"]
                assert [(d.serial, d.active) for d in devices] == [
                    (declared["device"]["serial"], True)
                ]
            else:
                assert admission is None

    beds = _declared_beds(document)
    assert Patient.objects.count() == sum(1 for _, bed in beds if "patient" in bed)
    assert Admission.objects.count() == Patient.objects.count()
    assert Device.objects.count() == (
        sum(1 for _, bed in beds if "device" in bed) + len(document["spare_devices"])
    )
    spare = Device.objects.get(serial=document["spare_devices"][0]["serial"])
    assert spare.bed is None
    assert spare.active
    assert User.objects.count() == len(document["users"])


@pytest.mark.django_db
def test_it_changes_nothing_when_run_twice() -> None:
    _load()
    first = _snapshot()

    output = _load()

    # Every row, pk and value is as it was: no duplicate, no re-issued token, no re-hashed
    # password (a new salt would change the stored hash).
    assert _snapshot() == first
    assert (
        "0 rows created, 0 corrected, 0 admissions opened, 0 device tokens issued, "
        "0 demo passwords reset" in output
    )


@pytest.mark.django_db
def test_it_gives_each_demo_clinician_exactly_their_wards() -> None:
    _load()

    for declared in _demo_file()["users"]:
        user = User.objects.get(username=declared["username"])
        granted = set(WardAccess.objects.filter(user=user).values_list("ward__code", flat=True))
        visible = set(wards_visible_to(user=user).values_list("code", flat=True))
        if declared["role"] == "clinician":
            assert granted == visible == set(declared["wards"])
            assert not user.is_staff
            assert not user.is_superuser
        else:
            assert granted == set()
            assert visible == set(Ward.objects.values_list("code", flat=True))
            assert user.is_superuser
    assert set(
        WardAccess.objects.filter(user__username="nurse.amu").values_list("ward__code", flat=True)
    ) == {"amu"}
    assert set(
        WardAccess.objects.filter(user__username="dr.medicine").values_list("ward__code", flat=True)
    ) == {"amu", "resp"}


@pytest.mark.django_db
def test_it_lets_the_documented_demo_logins_sign_in() -> None:
    _load()

    for declared in _demo_file()["users"]:
        user = authenticate(
            RequestFactory().post("/accounts/login/"),
            username=declared["username"],
            password=declared["password"],
        )
        assert user is not None, declared["username"]
        assert user.first_name
        assert user.last_name


@pytest.mark.django_db
def test_it_restores_a_demo_password_someone_changed() -> None:
    _load()
    nurse = User.objects.get(username="nurse.amu")
    nurse.set_password("changed-by-someone-123")
    nurse.save(update_fields=["password"])

    output = _load()

    request = RequestFactory().post("/accounts/login/")
    assert authenticate(request, username="nurse.amu", password="demo-nurse-2026") is not None
    assert "1 demo passwords reset" in output


@pytest.mark.django_db
def test_it_gives_each_demo_device_a_token_the_simulator_can_derive() -> None:
    _load()

    document = _demo_file()
    serials = [bed["device"]["serial"] for _, bed in _declared_beds(document) if "device" in bed]
    serials += [device["serial"] for device in document["spare_devices"]]
    for serial in serials:
        device = Device.objects.get(serial=serial)
        assert token_digest(demo_device_token(serial)) == device.token_digest
        assert demo_device_token(serial).startswith(device.token_hint)
        assert device.token_issued_at is not None


@pytest.mark.django_db
@override_settings(PORTAL_MODE="production")
def test_it_refuses_to_run_in_production_mode() -> None:
    with pytest.raises(CommandError, match="production"):
        _load()

    assert not Ward.objects.exists()
    assert not User.objects.exists()


@pytest.mark.django_db
def test_it_leaves_a_patient_an_administrator_moved_where_they_are() -> None:
    _load()
    admission = _open_admission("DEMO0001")
    assert admission is not None
    empty_bed = Bed.objects.get(ward__code="amu", label="Bed 11")
    admission_transfer(admission=admission, to_bed=empty_bed)

    output = _load()

    moved = _open_admission("DEMO0001")
    assert moved is not None
    assert moved.bed == empty_bed
    assert (
        Admission.objects.filter(patient__mrn="DEMO0001", discharged_at__isnull=True).count() == 1
    )
    assert not Admission.objects.filter(bed=admission.bed, discharged_at__isnull=True).exists()
    assert "DEMO0001 stays in amu / Bed 11" in output


@pytest.mark.django_db
def test_it_does_not_admit_a_demo_patient_into_a_bed_someone_else_holds() -> None:
    _load()
    admission = _open_admission("DEMO0001")
    assert admission is not None
    admission_discharge(admission=admission)
    other = admission_create(patient=factories.patient(), bed=admission.bed)

    output = _load()

    assert _open_admission("DEMO0001") is None
    assert Admission.objects.get(bed=admission.bed, discharged_at__isnull=True) == other
    assert "DEMO0001 not admitted" in output


@pytest.mark.django_db
def test_it_prints_the_demo_logins_marked_demo_only() -> None:
    output = _load()

    assert "DEMO ONLY" in output
    for declared in _demo_file()["users"]:
        assert declared["username"] in output
        assert declared["password"] in output
    assert demo_device_token("DEMO-AMU-01") in output


@pytest.mark.django_db
def test_it_rejects_an_undocumented_key_and_writes_nothing(tmp_path: Path) -> None:
    document = _demo_file()
    document["wards"][0]["beds"][0]["patient"]["famly_name"] = "Typo"

    with pytest.raises(CommandError, match="famly_name"):
        _load(_write(tmp_path, document))

    assert not Ward.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_malformed_alert_rule_and_writes_nothing(tmp_path: Path) -> None:
    document = _demo_file()
    document["alert_rules"] = [{"code": "8867-4", "above": 130}]

    with pytest.raises(CommandError, match="alert_rules"):
        _load(_write(tmp_path, document))
    assert not Ward.objects.exists()


@pytest.mark.django_db
def test_it_gives_the_copd_patient_their_own_spo2_target_and_scale_2() -> None:
    _load()
    _load()
    copd = Patient.objects.get(mrn="DEMO0011")
    assert copd.news2_spo2_scale2
    [rule] = AlertRule.objects.filter(patient=copd)
    assert (rule.code, rule.low, rule.clear_low, rule.priority) == ("59408-5", 88.0, 90.0, "high")
    effective = rules_effective_for(patient=copd, ward_id=Ward.objects.get(code="resp").pk)
    spo2_rules = [r.name for r in effective if r.code == "59408-5"]
    assert spo2_rules == [rule.name]  # replaces the hospital's below-90 rule


def _key_paths(value: Any, prefix: str) -> set[str]:
    if isinstance(value, list):
        return set().union(*(_key_paths(item, f"{prefix}[]") for item in value))
    if not isinstance(value, dict):
        return set()
    paths: set[str] = set()
    for key, item in value.items():
        if key == "notes":
            continue
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        paths |= _key_paths(item, path)
    return paths


def test_it_documents_every_key_the_demo_file_uses() -> None:
    document = _demo_file()
    used = set()
    for key, value in document.items():
        if key in {"about", "key_reference"}:
            used.add(key)
        elif key == "device_types":
            used.add(key)
            for kind in value.values():
                used |= {f"device_types.<name>.{k}" for k in kind if k != "notes"}
        else:
            used |= _key_paths({key: value}, "")

    assert used <= set(document["key_reference"])


@pytest.mark.django_db
def test_it_records_air_and_alert_for_each_admitted_patient_once() -> None:
    from monitoring.models import Observation
    from monitoring.vitals import CONSCIOUSNESS, SUPPLEMENTAL_OXYGEN

    _load()
    admitted = Admission.objects.filter(discharged_at__isnull=True).count()
    entered = Observation.objects.filter(code__in=[SUPPLEMENTAL_OXYGEN.code, CONSCIOUSNESS.code])
    assert entered.count() == 2 * admitted
    assert set(entered.values_list("value", flat=True)) == {0.0}
    assert all(o.entered_by_id for o in entered)
    _load()
    assert entered.count() == 2 * admitted
