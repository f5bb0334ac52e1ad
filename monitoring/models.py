"""Bedside devices and the vital-sign observations they post."""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models

from monitoring.vitals import CODE_CHOICES
from patients.models import Bed, Patient


def token_digest(token: str) -> str:
    """SHA-256 of a device token, as stored and looked up.

    Tokens are 256-bit random values, so a fast hash is enough (no dictionary to attack) and
    keeps the per-request lookup to one indexed equality.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Device(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    serial = models.CharField(max_length=64, unique=True)
    manufacturer = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=100, blank=True)
    bed = models.ForeignKey(
        Bed, on_delete=models.SET_NULL, null=True, blank=True, related_name="devices"
    )
    active = models.BooleanField(default=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Only the digest is kept; the plain token is shown once when issued or rotated.
    # NULL (not "") when no token is issued: a unique index allows many NULLs, not many "".
    token_digest = models.CharField(  # noqa: DJ001
        max_length=64, unique=True, null=True, editable=False
    )
    token_hint = models.CharField(
        max_length=12, blank=True, editable=False, help_text="First characters of the token."
    )
    token_issued_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["serial"]

    def __str__(self) -> str:
        return self.serial

    @property
    def has_token(self) -> bool:
        return self.token_digest is not None


class IngestMessage(models.Model):
    """One message a device posted: the idempotency record and the evaluation marker.

    ``(device, message_id)`` is unique, so a retried or duplicated message is stored once;
    ``response`` is what the device was told, replayed byte for byte on a retry.
    ``evaluated_at`` stays empty until the alert engine has evaluated the message's readings:
    it is the durable marker the catch-up task uses when the broker was unreachable.
    """

    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="messages")
    message_id = models.CharField(max_length=255)
    body_digest = models.CharField(max_length=64)
    response = models.JSONField()
    observation_count = models.PositiveIntegerField()
    received_at = models.DateTimeField()
    evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "message_id"], name="ingest_message_unique_per_device"
            ),
        ]
        indexes = [
            # The catch-up scans "not yet evaluated, oldest first".
            models.Index(fields=["evaluated_at", "id"], name="ingest_msg_pending_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}:{self.message_id}"


class Observation(models.Model):
    """One vital-sign reading, in the catalogue's canonical UCUM unit.

    Posted by a ``device`` or entered by staff (``entered_by``). ``patient`` is empty when the
    device had no bed or its bed no admitted patient at
    ``observed_at``: the reading is kept all the same, for administrators to see.
    """

    device = models.ForeignKey(
        Device, on_delete=models.PROTECT, null=True, blank=True, related_name="observations"
    )
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The member of staff who entered the reading (air or oxygen, ACVPU).",
    )
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, null=True, blank=True, related_name="observations"
    )
    message = models.ForeignKey(
        IngestMessage,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="observations",
        help_text="The device message that carried the reading (empty when entered by staff).",
    )
    code = models.CharField(max_length=32, choices=CODE_CHOICES)
    value = models.FloatField()
    unit = models.CharField(max_length=16)
    observed_at = models.DateTimeField()
    received_at = models.DateTimeField()
    # Set by the device when it knows the value is unreliable (motion, probe off): stored for
    # the record, never alarmed on.
    artifact = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # Serves both "latest value per patient and code" (a backward index scan per code)
            # and "one patient's code over a time range".
            models.Index(fields=["patient", "code", "observed_at"], name="obs_patient_code_time"),
            models.Index(fields=["device", "observed_at"], name="obs_device_time"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(device__isnull=False) | models.Q(entered_by__isnull=False),
                name="observation_has_a_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} at {self.observed_at:%Y-%m-%d %H:%M:%S}"
