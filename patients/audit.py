"""Recording reads of patients' records (the access log) in one query per request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest

from config.observability import request_id
from patients.models import AccessLog, ApiToken


def client_address(request: HttpRequest | None) -> str | None:
    # REMOTE_ADDR is the proxy behind a reverse proxy; django-axes' ipware setting names how
    # many proxies to trust, and the same rule applies here.
    if request is None:
        return None
    from django.conf import settings

    proxies = getattr(settings, "AXES_IPWARE_PROXY_COUNT", 0)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR") or None


def access_record(
    *,
    user: Any,
    patient_ids: Iterable[int | None],
    action: str,
    resource: str = "",
    address: str | None = None,
    token: ApiToken | None = None,
) -> None:
    """Append one access-log row per patient read (one INSERT whatever their number)."""
    user_id = user.pk if user is not None and user.is_authenticated else None
    rows = [
        AccessLog(
            user_id=user_id,
            token=token,
            patient_id=patient_id,
            action=action,
            resource=resource[:200],
            address=address,
            request_id=request_id.get()[:64],
        )
        for patient_id in dict.fromkeys(patient_ids)
    ]
    if rows:
        AccessLog.objects.bulk_create(rows)
