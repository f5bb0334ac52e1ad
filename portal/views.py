"""Clinician pages. Every page is scoped to the wards the user may see."""

from __future__ import annotations

import datetime as dt
import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitoring.selectors import observation_trend
from monitoring.vitals import VITALS
from patients.audit import access_record, client_address
from patients.selectors import beds_with_current_admission, ward_visible_to
from portal.consumers import PROTOCOL as WEBSOCKET_PROTOCOL
from portal.selectors import (
    patient_alert_history,
    patient_news2_history,
    patient_open_alerts,
    patient_visible_to,
    wards_with_open_alert_counts,
)

# Trend ranges a patient page offers, in hours, with the bucket width that keeps each chart at
# about 720 points (one per pixel column of a wide chart) however long the range.
TREND_BUCKET_SECONDS = {1: 5, 8: 40, 24: 120}
# How often the ward list reloads its alert counts (it is not live, and says so).
WARD_LIST_REFRESH_SECONDS = 30
# The placeholder a script replaces with a patient's public id to build the patient page URL.
_PATIENT_PLACEHOLDER = uuid.UUID(int=0)


@login_required
@never_cache
def ward_list(request: HttpRequest) -> HttpResponse:
    wards = wards_with_open_alert_counts(user=request.user)
    return render(
        request,
        "portal/ward_list.html",
        {
            "wards": wards,
            "as_of": timezone.now(),
            "refresh_seconds": WARD_LIST_REFRESH_SECONDS,
            "display_time_zone": settings.DISPLAY_TIME_ZONE,
        },
    )


@login_required
@never_cache
def ward_dashboard(request: HttpRequest, ward_code: str) -> HttpResponse:
    # A ward the user may not see is answered exactly like one that does not exist.
    ward = ward_visible_to(user=request.user, ward_code=ward_code)
    if ward is None:
        raise Http404("No such ward.")
    beds = beds_with_current_admission(ward=ward)
    scheme = "wss" if request.is_secure() else "ws"
    # The path portal/routing.py serves the ward consumer on (docs/dashboard-protocol.md).
    websocket_url = (
        f"{scheme}://{request.get_host()}/ws/wards/{ward.code}/?protocol={WEBSOCKET_PROTOCOL}"
    )
    patient_url = reverse("portal:patient", args=[_PATIENT_PLACEHOLDER])
    return render(
        request,
        "portal/ward_dashboard.html",
        {
            "ward": ward,
            "beds": beds,
            "websocket_url": websocket_url,
            "patient_url_template": patient_url,
            "patient_url_placeholder": str(_PATIENT_PLACEHOLDER),
            "display_time_zone": settings.DISPLAY_TIME_ZONE,
        },
    )


@login_required
@never_cache
def patient_page(request: HttpRequest, patient_id: uuid.UUID) -> HttpResponse:
    # Like a ward: a patient in a ward the user may not see does not exist for them.
    patient = patient_visible_to(user=request.user, patient_public_id=patient_id)
    if patient is None:
        raise Http404("No such patient.")
    current = patient.current_admissions  # type: ignore[attr-defined]  # Prefetch to_attr
    admission = current[0] if current else None
    access_record(
        user=request.user,
        patient_ids=[patient.pk],
        action="portal.patient_page",
        resource=request.path,
        address=client_address(request),
    )
    return render(
        request,
        "portal/patient.html",
        {
            "patient": patient,
            "admission": admission,
            "open_alerts": patient_open_alerts(patient=patient),
            "alert_events": patient_alert_history(patient=patient),
            "trend_hours": sorted(TREND_BUCKET_SECONDS),
            "display_time_zone": settings.DISPLAY_TIME_ZONE,
        },
    )


def _error(code: str, detail: str, status: int) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


def _epoch(moment: dt.datetime) -> float:
    return round(moment.timestamp(), 3)


@login_required
@never_cache
@require_GET
def patient_trends(request: HttpRequest, patient_id: uuid.UUID) -> JsonResponse:
    """Chart data for the patient page: per vital, time-bucketed min/mean/max as columns
    (uPlot's shape: times in epoch seconds, then one array per series), and the NEWS2 history.
    """
    patient = patient_visible_to(user=request.user, patient_public_id=patient_id)
    if patient is None:
        return _error("not_found", "No such patient.", 404)
    try:
        hours = int(request.GET.get("hours", "1"))
    except ValueError:
        hours = 0
    bucket_seconds = TREND_BUCKET_SECONDS.get(hours)
    if bucket_seconds is None:
        choices = ", ".join(str(h) for h in sorted(TREND_BUCKET_SECONDS))
        return _error("invalid_hours", f"hours must be one of {choices}.", 400)

    access_record(
        user=request.user,
        patient_ids=[patient.pk],
        action="portal.patient_trends",
        resource=request.path,
        address=client_address(request),
    )
    end = timezone.now()
    start = end - dt.timedelta(hours=hours)
    trend = observation_trend(
        patient_id=patient.pk, start=start, end=end, bucket_seconds=bucket_seconds
    )
    vitals = []
    for code, vital in VITALS.items():  # the catalogue's order, the same on every page
        points = trend.get(code)
        if not points:
            continue
        places = vital.decimals + 1
        vitals.append(
            {
                "code": code,
                "name": vital.name,
                "short_name": vital.short_name,
                "unit": vital.unit,
                "decimals": vital.decimals,
                "t": [_epoch(p.at) for p in points],
                "min": [p.min for p in points],
                "mean": [round(p.mean, places) for p in points],
                "max": [p.max for p in points],
                "count": [p.count for p in points],
            }
        )
    scores = patient_news2_history(patient_id=patient.pk, start=start, end=end)
    return JsonResponse(
        {
            "patient": str(patient.public_id),
            "hours": hours,
            "bucket_seconds": bucket_seconds,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "vitals": vitals,
            "news2": {
                "t": [_epoch(s.observed_at) for s in scores],
                "total": [s.total for s in scores],
                "complete": [s.complete for s in scores],
                "risk": [s.risk for s in scores],
            },
        }
    )
