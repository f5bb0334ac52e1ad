"""Wards, beds, patients, admissions, and which clinicians may see which ward."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Q, When


class Ward(models.Model):
    # The code is the ward's public identifier (URLs, channel-layer group, API).
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=120)
    escalation_seconds = models.PositiveIntegerField(
        default=60,
        help_text="An active high-priority alert not acknowledged within this time escalates "
        "one level, and again after each further period.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        permissions = [
            ("view_all_wards", "Can see every ward's patients and dashboards"),
        ]

    def __str__(self) -> str:
        return f"{self.code} – {self.name}"


class Bed(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    ward = models.ForeignKey(Ward, on_delete=models.PROTECT, related_name="beds")
    label = models.CharField(max_length=32)

    class Meta:
        ordering = ["ward__code", "label"]
        constraints = [
            models.UniqueConstraint(fields=["ward", "label"], name="bed_label_unique_in_ward"),
        ]

    def __str__(self) -> str:
        return f"{self.ward.code} / {self.label}"


class Patient(models.Model):
    class Sex(models.TextChoices):
        # FHIR AdministrativeGender, so the FHIR façade maps one to one.
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"
        UNKNOWN = "unknown", "Unknown"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    mrn = models.CharField("MRN", max_length=32, unique=True)
    family_name = models.CharField(max_length=100)
    given_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    sex = models.CharField(max_length=8, choices=Sex.choices, default=Sex.UNKNOWN)
    news2_spo2_scale2 = models.BooleanField(
        "NEWS2 SpO2 scale 2",
        default=False,
        help_text="Only for a patient whose clinician set an SpO2 target of 88–92 % "
        "(e.g. hypercapnic respiratory failure).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family_name", "given_name", "mrn"]
        indexes = [models.Index(fields=["family_name", "given_name"], name="patient_name_idx")]

    def __str__(self) -> str:
        return f"{self.family_name.upper()}, {self.given_name} ({self.mrn})"


class Admission(models.Model):
    """One stay of a patient in one bed. A transfer ends one stay and opens the next.

    MariaDB has no partial unique index, so "at most one open admission per patient and per
    bed" is enforced with stored generated columns that hold the patient (or bed) id while the
    admission is open and NULL once discharged; a unique index ignores NULLs, so closed
    admissions never collide while two open ones always do.
    """

    class EndReason(models.TextChoices):
        DISCHARGED = "discharged", "Discharged"
        TRANSFERRED = "transferred", "Transferred to another bed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="admissions")
    bed = models.ForeignKey(Bed, on_delete=models.PROTECT, related_name="admissions")
    admitted_at = models.DateTimeField()
    discharged_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)
    open_patient = models.GeneratedField(
        expression=Case(When(discharged_at__isnull=True, then=F("patient_id")), default=None),
        output_field=models.BigIntegerField(null=True),
        db_persist=True,
    )
    open_bed = models.GeneratedField(
        expression=Case(When(discharged_at__isnull=True, then=F("bed_id")), default=None),
        output_field=models.BigIntegerField(null=True),
        db_persist=True,
    )

    class Meta:
        ordering = ["-admitted_at"]
        constraints = [
            models.UniqueConstraint(fields=["open_patient"], name="one_open_admission_per_patient"),
            models.UniqueConstraint(fields=["open_bed"], name="one_open_admission_per_bed"),
            models.CheckConstraint(
                condition=Q(discharged_at__isnull=True) | Q(discharged_at__gte=F("admitted_at")),
                name="admission_discharged_after_admitted",
            ),
            models.CheckConstraint(
                condition=(Q(discharged_at__isnull=True) & Q(end_reason=""))
                | (Q(discharged_at__isnull=False) & ~Q(end_reason="")),
                name="admission_end_reason_iff_discharged",
            ),
        ]
        indexes = [
            # "Who was in this bed at time t" (attaching readings to patients).
            models.Index(fields=["bed", "admitted_at"], name="admission_bed_time_idx"),
        ]

    def __str__(self) -> str:
        return f"Admission {self.public_id}"

    @property
    def is_open(self) -> bool:
        return self.discharged_at is None


class WardAccess(models.Model):
    """A clinician's permission to see one ward.

    An explicit model rather than a group per ward: a grant is a clinical-governance record
    (who granted it, when), it is audited like any change, and revoking it must be able to
    close the clinician's open dashboards for that ward.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ward_accesses"
    )
    ward = models.ForeignKey(Ward, on_delete=models.CASCADE, related_name="accesses")
    granted_at = models.DateTimeField(auto_now_add=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        verbose_name = "ward access"
        verbose_name_plural = "ward access"
        constraints = [
            models.UniqueConstraint(fields=["user", "ward"], name="ward_access_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.ward.code}"


class ApiToken(models.Model):
    """A credential for another hospital system or a script: scoped, revocable, hashed.

    The plain token is shown once when issued; only its SHA-256 digest is stored. It acts as
    its user, limited to its scopes.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read records"
        ACKNOWLEDGE = "acknowledge", "Acknowledge and resolve alerts"
        WRITE = "write", "Change records (admissions, rules, devices)"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="Which system or script uses it.")
    scopes = models.JSONField(default=list)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"


class AccessLog(models.Model):
    """Append-only record of every read of a patient's records: who, what, whom, when, where.

    Rows are only ever inserted (``patients.audit.access_record``); the admin shows them
    read-only and the model refuses updates.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    token = models.ForeignKey(
        ApiToken, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=64)
    resource = models.CharField(max_length=200, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["patient", "at"], name="access_patient_time_idx"),
            models.Index(fields=["user", "at"], name="access_user_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} at {self.at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise ValueError("The access log is append-only.")
        super().save(*args, **kwargs)
