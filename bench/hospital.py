"""The bench hospital: wards of 36 beds, each bed with an admitted patient and one device.

Lives in the bench database only (portal_bench by default), is created once and grown when a
run needs more devices. Rows are bulk-created: a thousand beds through the services would take
minutes and measure nothing. Tokens are issued through ``device_token_issue`` on every run,
because only their digests are stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from monitoring.models import Device, IngestMessage, Observation
from monitoring.services import device_token_issue
from patients.models import Admission, Bed, Patient, Ward

SERIAL_PREFIX = "BENCH-"
WARD_PREFIX = "bench-"
BEDS_PER_WARD = 36


def _ward_code(index: int) -> str:
    return f"{WARD_PREFIX}{index // BEDS_PER_WARD + 1:03d}"


def _bed_label(index: int) -> str:
    return f"B{index % BEDS_PER_WARD + 1:02d}"


def bench_devices_ensure(*, count: int) -> list[Device]:
    """The first ``count`` bench devices in a stable order, creating what is missing."""
    existing = Device.objects.filter(serial__startswith=SERIAL_PREFIX).count()
    if existing < count:
        _hospital_grow(indices=range(existing, count))
    return list(Device.objects.filter(serial__startswith=SERIAL_PREFIX).order_by("serial")[:count])


@transaction.atomic
def _hospital_grow(*, indices: range) -> None:
    # Admitted a day ago, so every reading a run posts belongs to the bed's patient.
    admitted_at = timezone.now() - dt.timedelta(days=1)
    codes = sorted({_ward_code(i) for i in indices})
    Ward.objects.bulk_create(
        [Ward(code=code, name=f"Bench ward {code.removeprefix(WARD_PREFIX)}") for code in codes],
        ignore_conflicts=True,
    )
    wards = {ward.code: ward for ward in Ward.objects.filter(code__in=codes)}
    Bed.objects.bulk_create([Bed(ward=wards[_ward_code(i)], label=_bed_label(i)) for i in indices])
    beds = {(bed.ward_id, bed.label): bed for bed in Bed.objects.filter(ward__in=wards.values())}
    bed_of = {i: beds[(wards[_ward_code(i)].pk, _bed_label(i))] for i in indices}
    Patient.objects.bulk_create(
        [
            Patient(
                mrn=f"BENCH{i:07d}",
                family_name="Bench",
                given_name=f"Patient {i}",
                date_of_birth=dt.date(1960, 1, 1),
                sex=Patient.Sex.UNKNOWN,
            )
            for i in indices
        ]
    )
    patients = {
        patient.mrn: patient
        for patient in Patient.objects.filter(mrn__in=[f"BENCH{i:07d}" for i in indices])
    }
    Admission.objects.bulk_create(
        [
            Admission(patient=patients[f"BENCH{i:07d}"], bed=bed_of[i], admitted_at=admitted_at)
            for i in indices
        ]
    )
    Device.objects.bulk_create(
        [
            Device(
                serial=f"{SERIAL_PREFIX}{i:05d}",
                manufacturer="bench",
                model="loadgen",
                bed=bed_of[i],
            )
            for i in indices
        ]
    )


def bench_device_tokens_issue(*, devices: list[Device]) -> list[str]:
    """Rotate every device's token; the plain tokens go to the load generator, in order."""
    return [device_token_issue(device=device) for device in devices]


def bench_readings_clear() -> None:
    """Empty the observation and message tables, so a run's rows are exactly what it stored.

    TRUNCATE rather than DELETE (seconds instead of minutes after a million rows), hence only
    in a database whose name says it belongs to the bench.
    """
    name = connection.settings_dict["NAME"]
    if "bench" not in name:
        raise RuntimeError(f"refusing to empty tables of {name!r}: not a bench database")
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        # Observation references IngestMessage; TRUNCATE refuses referenced tables otherwise.
        cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        try:
            for model in (Observation, IngestMessage):
                cursor.execute(f"TRUNCATE TABLE {quote(model._meta.db_table)}")
        finally:
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")


def bench_alert_state_clear() -> None:
    """Forget what the alert engine knows about the bench patients: their alerts (and events),
    carried evaluation state and NEWS2 history, so every run starts from the same state (a
    latched alert left open by a previous run would turn this run's "fired" into an update)."""
    from alerts.models import Alert, News2Score, PatientAlertState

    patients = Patient.objects.filter(mrn__startswith="BENCH")
    Alert.objects.filter(patient__in=patients).delete()
    PatientAlertState.objects.filter(patient__in=patients).delete()
    News2Score.objects.filter(patient__in=patients).delete()


def bench_beds_by_device(*, devices: list[Device]) -> dict[str, int]:
    """Bed public id → index of the device in ``devices`` (each bench bed has one device)."""
    index = {device.pk: i for i, device in enumerate(devices)}
    return {
        str(bed): index[pk]
        for pk, bed in Device.objects.filter(pk__in=index).values_list("pk", "bed__public_id")
    }


CLINICIAN_PREFIX = "bench.clinician."
SESSION_LIFETIME = dt.timedelta(hours=12)  # outlives any run; the portal's idle timeout is 30 min


def bench_clinicians_ensure(*, users: int) -> list[Any]:
    """``users`` bench clinicians (not administrators) with ward access to every bench ward."""
    from django.contrib.auth import get_user_model

    from patients.models import WardAccess

    user_model = get_user_model()
    clinicians = []
    for n in range(users):
        user, created = user_model.objects.get_or_create(
            username=f"{CLINICIAN_PREFIX}{n:03d}",
            defaults={"first_name": "Bench", "last_name": f"Clinician {n}"},
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        clinicians.append(user)
    wards = list(Ward.objects.filter(code__startswith=WARD_PREFIX))
    WardAccess.objects.bulk_create(
        [WardAccess(user=user, ward=ward) for user in clinicians for ward in wards],
        ignore_conflicts=True,
    )
    return clinicians


def bench_clinician_sessions(*, users: int, sessions: int) -> list[str]:
    """``sessions`` logged-in sessions spread over ``users`` bench clinicians (see
    ``bench_clinicians_ensure``); returns the session keys.

    Sessions are written as Django's login would leave them (user id, backend, the password
    hash's HMAC), in bulk INSERTs: logging in through the page thousands of times would
    measure django-axes and password hashing, not dashboards.
    """
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils.crypto import get_random_string

    clinicians = bench_clinicians_ensure(users=users)
    store = SessionStore()
    expires = timezone.now() + SESSION_LIFETIME
    backend = "django.contrib.auth.backends.ModelBackend"
    keys = [get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(sessions)]
    rows = []
    for i, key in enumerate(keys):
        user = clinicians[i % len(clinicians)]
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: backend,
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expires))
    Session.objects.bulk_create(rows, batch_size=1000)
    return keys


def bench_sessions_end(*, keys: list[str]) -> None:
    """Delete the sessions a run created, and any expired ones a crashed run left."""
    from django.contrib.sessions.models import Session

    for start in range(0, len(keys), 1000):
        Session.objects.filter(session_key__in=keys[start : start + 1000]).delete()
    Session.objects.filter(expire_date__lt=timezone.now()).delete()
