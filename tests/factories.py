"""Small builders for test data (plain functions: explicit beats clever)."""

from __future__ import annotations

import datetime as dt
import itertools

from django.contrib.auth.models import User

from monitoring.models import Device
from patients.models import Admission, Bed, Patient, Ward, WardAccess
from patients.services import admission_create

_counter = itertools.count(1)


def ward(code: str | None = None, name: str | None = None) -> Ward:
    n = next(_counter)
    return Ward.objects.create(code=code or f"ward-{n}", name=name or f"Ward {n}")


def bed(ward_: Ward | None = None, label: str | None = None) -> Bed:
    return Bed.objects.create(ward=ward_ or ward(), label=label or f"B{next(_counter)}")


def patient(mrn: str | None = None, **fields: object) -> Patient:
    n = next(_counter)
    values: dict[str, object] = {
        "mrn": mrn or f"MRN{n:07d}",
        "family_name": f"Family{n}",
        "given_name": f"Given{n}",
        "date_of_birth": dt.date(1950, 1, 1) + dt.timedelta(days=n),
        "sex": Patient.Sex.UNKNOWN,
    }
    values.update(fields)
    return Patient.objects.create(**values)


def admitted_patient(bed_: Bed | None = None, **fields: object) -> Admission:
    return admission_create(patient=patient(**fields), bed=bed_ or bed())


def device(bed_: Bed | None = None, serial: str | None = None, **fields: object) -> Device:
    return Device.objects.create(serial=serial or f"SN-{next(_counter):06d}", bed=bed_, **fields)


def clinician(*wards: Ward, username: str | None = None) -> User:
    user = User.objects.create_user(
        username=username or f"clinician{next(_counter)}", password="test-password-123"
    )
    for ward_ in wards:
        WardAccess.objects.create(user=user, ward=ward_)
    return user


def administrator(username: str | None = None) -> User:
    return User.objects.create_superuser(
        username=username or f"admin{next(_counter)}", password="test-password-123"
    )
