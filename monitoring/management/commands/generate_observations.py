"""Bulk synthetic readings for benchmarks and development (refused in production mode).

``manage.py generate_observations --patient BENCH0000000 --hours 24 --rate 1 --codes 6`` stores
a day of 1 Hz readings of six vitals (518,400 rows) for one patient in seconds: multi-row
INSERTs of 1,000 rows in one transaction, not the ingestion service (which would measure
ingestion, one message at a time). ``--ward`` does the same for every patient admitted to a
ward, interleaved in time as real traffic is.

Idempotent per (patient, range): a patient who already has readings of these vitals in the
range is left alone (and said so); ``--replace`` deletes those readings first.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from monitoring.models import Device, Observation
from monitoring.vitals import (
    BODY_TEMPERATURE,
    DIASTOLIC_BP,
    HEART_RATE,
    MEAN_ARTERIAL_PRESSURE,
    RESPIRATORY_RATE,
    SPO2,
    SYSTOLIC_BP,
    Vital,
)
from patients.models import Admission, Patient

ROWS_PER_INSERT = 1000
MAX_ROWS = 50_000_000  # a bound on what one command may write


@dataclass(frozen=True, slots=True)
class Stable:
    """A stable adult's value of one vital: synthetic, inside the NEWS2 zero-score band of
    ../shared/clinical.md (the simulator's baselines, portal.physiology, which monitoring may
    not import: apps depend one way)."""

    vital: Vital
    low: float
    high: float
    step: float  # standard deviation of the random walk per second


# In the order --codes takes them: the six a bedside monitor posts, then MAP.
STABLE = (
    Stable(HEART_RATE, 62, 82, 0.8),
    Stable(SPO2, 97, 99, 0.2),
    Stable(RESPIRATORY_RATE, 13, 17, 0.3),
    Stable(SYSTOLIC_BP, 118, 140, 1.0),
    Stable(DIASTOLIC_BP, 65, 82, 0.8),
    Stable(BODY_TEMPERATURE, 36.5, 37.2, 0.01),
    Stable(MEAN_ARTERIAL_PRESSURE, 85, 100, 0.8),
)


class Command(BaseCommand):
    help = (
        "Bulk-insert synthetic 1 Hz readings for a patient (or every patient of a ward) over a "
        "time range, for benchmarks and development. Idempotent per (patient, range); "
        "--replace rewrites. Refused when PORTAL_MODE=production."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--patient", help="MRN or public id of the patient")
        who.add_argument("--ward", help="every patient admitted to this ward (code)")
        span = parser.add_mutually_exclusive_group()
        span.add_argument("--hours", type=float, help="length of the range (default 24)")
        span.add_argument("--minutes", type=float, help="length of the range, in minutes")
        parser.add_argument(
            "--end", help="end of the range, ISO 8601 (default: now, to the second)"
        )
        parser.add_argument(
            "--rate", type=float, default=1.0, help="readings per second of each vital"
        )
        parser.add_argument(
            "--codes", type=int, default=6, help=f"how many vitals (1..{len(STABLE)})"
        )
        parser.add_argument("--replace", action="store_true", help="delete what is in the range")
        parser.add_argument("--seed", type=int, default=1, help="random seed (values only)")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PORTAL_MODE == "production":
            raise CommandError(
                "Refusing to generate observations in production mode (PORTAL_MODE=production):"
                " synthetic readings would sit in real patients' records."
            )
        minutes = options["minutes"]
        hours = options["hours"] if options["hours"] is not None else 24.0
        span = dt.timedelta(minutes=minutes) if minutes is not None else dt.timedelta(hours=hours)
        rate, codes = options["rate"], options["codes"]
        if not 0 < rate <= 100 or not 1 <= codes <= len(STABLE):
            raise CommandError(f"--rate is in (0, 100]; --codes in 1..{len(STABLE)}")
        if span <= dt.timedelta(0):
            raise CommandError("the range must be longer than zero")
        end = self._end(options["end"])
        start = end - span
        patients = self._patients(patient=options["patient"], ward=options["ward"])
        stable = STABLE[:codes]
        per_patient = math.ceil(span.total_seconds() * rate) * codes
        if per_patient * len(patients) > MAX_ROWS:
            raise CommandError(
                f"{per_patient * len(patients):,} rows: more than {MAX_ROWS:,} in one command"
            )
        todo: list[tuple[Patient, QuerySet[Observation] | None]] = []
        for patient in patients:
            existing = Observation.objects.filter(
                patient=patient,
                code__in=[s.vital.code for s in stable],
                observed_at__gte=start,
                observed_at__lt=end,
            )
            count = existing.count()
            if count and not options["replace"]:
                self.stdout.write(
                    f"{patient.mrn}: already {count:,} readings in {start:%Y-%m-%d %H:%M:%S} → "
                    f"{end:%Y-%m-%d %H:%M:%S} UTC; left alone (--replace rewrites them)"
                )
                continue
            todo.append((patient, existing if count else None))
        if not todo:
            return
        devices = self._devices([patient for patient, _ in todo])
        started = time.monotonic()
        with transaction.atomic():
            deleted = 0
            for _, replaced in todo:
                if replaced is not None:
                    deleted += replaced.delete()[0]  # one DELETE: nothing refers to readings
            inserted = self._insert(
                [(patient.pk, devices[patient.pk]) for patient, _ in todo],
                stable=stable,
                start=start,
                end=end,
                rate=rate,
                seed=options["seed"],
            )
        seconds = time.monotonic() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"Inserted {inserted:,} readings ({codes} vitals at {rate:g} Hz) for "
                f"{len(todo)} patient(s) from {start:%Y-%m-%d %H:%M:%S} to "
                f"{end:%Y-%m-%d %H:%M:%S} UTC in {seconds:.1f} s "
                f"({inserted / seconds if seconds else 0:,.0f} rows/s)"
                + (f"; deleted {deleted:,} first" if deleted else "")
            )
        )

    @staticmethod
    def _end(given: str | None) -> dt.datetime:
        if given is None:
            return timezone.now().replace(microsecond=0)
        try:
            end = dt.datetime.fromisoformat(given)
        except ValueError:
            raise CommandError(f"--end {given!r} is not an ISO 8601 date and time") from None
        if timezone.is_naive(end):
            raise CommandError("--end needs a time zone (e.g. 2026-11-21T10:00:00Z)")
        return end

    @staticmethod
    def _patients(*, patient: str | None, ward: str | None) -> list[Patient]:
        if ward is not None:
            patients = list(
                Patient.objects.filter(
                    admissions__bed__ward__code=ward, admissions__discharged_at__isnull=True
                ).order_by("pk")
            )
            if not patients:
                raise CommandError(f"no patient is admitted to ward {ward!r}")
            return patients
        if patient is None:
            raise CommandError("name a --patient or a --ward")
        try:
            found = Patient.objects.filter(public_id=uuid.UUID(patient)).first()
        except ValueError:
            found = Patient.objects.filter(mrn=patient).first()
        if found is None:
            raise CommandError(f"no patient with MRN or public id {patient!r}")
        return [found]

    @staticmethod
    def _devices(patients: list[Patient]) -> dict[int, int]:
        """Each patient's device: the first active one at the bed of their open admission
        (a reading needs a device or a member of staff as its source)."""
        beds = dict(
            Admission.objects.filter(patient__in=patients, discharged_at__isnull=True).values_list(
                "patient_id", "bed_id"
            )
        )
        device_of_bed: dict[int, int] = {}
        for bed_id, device_id in (
            Device.objects.filter(bed_id__in=beds.values(), active=True)
            .order_by("-serial")
            .values_list("bed_id", "pk")
        ):
            device_of_bed[bed_id] = device_id  # ordered backwards: the first serial wins
        missing = [p.mrn for p in patients if device_of_bed.get(beds.get(p.pk, -1)) is None]
        if missing:
            raise CommandError(
                "no active device at the bed of: " + ", ".join(missing[:10]) + " (readings "
                "need a source; admit the patient to a bed with a device)"
            )
        return {p.pk: device_of_bed[beds[p.pk]] for p in patients}

    @staticmethod
    def _insert(
        patients: list[tuple[int, int]],
        *,
        stable: tuple[Stable, ...],
        start: dt.datetime,
        end: dt.datetime,
        rate: float,
        seed: int,
    ) -> int:
        rng = random.Random(seed)  # noqa: S311 - synthetic values, not secrets
        interval = dt.timedelta(seconds=1 / rate)
        steps = math.ceil((end - start) / interval)
        # Each patient's walk starts somewhere in the stable band and stays in it.
        walks = [[rng.uniform(s.low, s.high) for s in stable] for _ in patients]
        naive_start = start.astimezone(dt.UTC).replace(tzinfo=None)  # MySQLdb takes naive UTC
        table = connection.ops.quote_name(Observation._meta.db_table)
        sql = (
            f"INSERT INTO {table} (device_id, patient_id, message_id, code, value, unit,"  # noqa: S608 - table name from model metadata
            " observed_at, received_at, artifact) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        )  # placeholders only: MySQLdb batches executemany into one INSERT only then
        received_delay = dt.timedelta(milliseconds=200)
        rows: list[tuple[Any, ...]] = []
        inserted = 0
        with connection.cursor() as cursor:
            # Time first, then patient: the rows lie in the table as a ward's traffic does.
            for step in range(steps):
                observed_at = naive_start + step * interval
                for walk, (patient_id, device_id) in zip(walks, patients, strict=True):
                    for i, s in enumerate(stable):
                        value = walk[i] + rng.gauss(0.0, s.step)
                        walk[i] = value = min(s.high, max(s.low, value))
                        rows.append(
                            (
                                device_id,
                                patient_id,
                                None,  # no device message: generated, not ingested
                                s.vital.code,
                                round(value, s.vital.decimals),
                                s.vital.unit,
                                observed_at,
                                observed_at + received_delay,
                                False,
                            )
                        )
                if len(rows) >= ROWS_PER_INSERT:
                    cursor.executemany(sql, rows)  # mysqlclient sends one multi-row INSERT
                    inserted += len(rows)
                    rows = []
            if rows:
                cursor.executemany(sql, rows)
                inserted += len(rows)
        return inserted
