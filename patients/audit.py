"""Recording reads of patients' records (the access log) in one query per request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from config.observability import request_id
from config.rawsql import rows_insert
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


# In the order ``access_record`` passes the values (attnames for the foreign keys).
_ACCESS_COLUMNS = (
    "at",
    "patient_id",
    "user_id",
    "token_id",
    "action",
    "resource",
    "address",
    "request_id",
)


def access_record(
    *,
    user: Any,
    patient_ids: Iterable[int | None],
    action: str,
    resource: str = "",
    address: str | None = None,
    token: ApiToken | None = None,
) -> None:
    """Append one access-log row per patient read (one INSERT whatever their number).

    Written with ``config.rawsql.rows_insert`` (one multi-row INSERT on MySQL) rather than
    ``bulk_create``, whose per-field SQL compilation was the largest cost of a dashboard
    connecting (36 rows per ward, bench fanout). Each value is adapted by its field (an empty
    address stored as NULL), as ``bulk_create`` would write it; the model tests read the rows
    back through the ORM.
    """
    user_id = user.pk if user is not None and user.is_authenticated else None
    at = timezone.now()
    common = (
        user_id,
        token.pk if token is not None else None,
        action,
        resource[:200],
        address,
        request_id.get()[:64],
    )
    rows_insert(
        AccessLog,
        _ACCESS_COLUMNS,
        [(at, patient, *common) for patient in dict.fromkeys(patient_ids)],
    )
