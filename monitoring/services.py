"""Changes to devices and their readings."""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from monitoring.models import Device, token_digest

TOKEN_PREFIX = "dev_"  # noqa: S105 - a recognisable prefix, not a secret


@transaction.atomic
def device_token_issue(*, device: Device) -> str:
    """Issue (or rotate) the device's API token and return it; only its digest is stored.

    Rotation replaces the digest in one UPDATE, so the old token stops working at once.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    device.token_digest = token_digest(token)
    device.token_hint = token[: len(TOKEN_PREFIX) + 4]
    device.token_issued_at = timezone.now()
    device.save(update_fields=["token_digest", "token_hint", "token_issued_at"])
    return token


@transaction.atomic
def device_token_revoke(*, device: Device) -> None:
    device.token_digest = None
    device.token_hint = ""
    device.token_issued_at = None
    device.save(update_fields=["token_digest", "token_hint", "token_issued_at"])
