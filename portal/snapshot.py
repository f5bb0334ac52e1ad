"""The ward snapshot a dashboard receives on connect: everything on the ward, now.

Queries are per ward, not per bed: a handful regardless of how many beds the ward has.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.utils import timezone

from alerts.events import alert_fields, iso_or_none
from alerts.models import Alert, PatientAlertState
from monitoring.models import Device
from monitoring.selectors import latest_vitals, sparklines
from monitoring.vitals import DEVICE_VITALS
from patients.models import Ward
from patients.selectors import ward_beds_and_patients

# A vital older than this is shown as stale; the device-offline alarm uses the same default.
STALE_AFTER_SECONDS = 30
SPARKLINE_WINDOW = dt.timedelta(minutes=15)
# 30 points per vital over 15 minutes: enough for a 60-pixel sparkline, and it keeps a 36-bed
# ward's snapshot near 100 KB (each dashboard connect receives it).
SPARKLINE_BUCKET_SECONDS = 30


def ward_snapshot(*, ward_code: str) -> dict[str, Any]:
    ward = Ward.objects.get(code=ward_code)
    beds, patients = ward_beds_and_patients(ward=ward)
    patient_ids = [p.pk for p in patients.values()]
    vitals = latest_vitals(patient_ids=patient_ids)
    now = timezone.now()
    lines = sparklines(
        patient_ids=patient_ids,
        start=now - SPARKLINE_WINDOW,
        end=now,
        bucket_seconds=SPARKLINE_BUCKET_SECONDS,
    )
    news2 = {
        state.patient_id: state
        for state in PatientAlertState.objects.filter(
            patient_id__in=patient_ids, news2_total__isnull=False
        )
    }
    alerts: dict[int, list[Alert]] = defaultdict(list)
    for alert in Alert.objects.filter(open_patient__in=patient_ids).select_related(
        "patient", "rule", "bed", "acknowledged_by"
    ):
        alerts[alert.patient_id].append(alert)
    devices: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for bed_id, serial, last_seen in Device.objects.filter(bed__ward=ward, active=True).values_list(
        "bed_id", "serial", "last_seen_at"
    ):
        devices[bed_id].append({"serial": serial, "last_seen_at": iso_or_none(last_seen)})

    def bed_entry(bed: Any) -> dict[str, Any]:
        patient = patients.get(bed.pk)
        state = news2.get(patient.pk) if patient else None
        return {
            "bed": str(bed.public_id),
            "label": bed.label,
            "patient": {
                "id": str(patient.public_id),
                "name": f"{patient.family_name.upper()}, {patient.given_name}",
                "mrn": patient.mrn,
            }
            if patient
            else None,
            "vitals": vitals.get(patient.pk, {}) if patient else {},
            "sparklines": lines.get(patient.pk, {}) if patient else {},
            "news2": {
                "total": state.news2_total,
                "complete": state.news2_complete,
                "risk": state.news2_risk,
                "at": iso_or_none(state.news2_at),
            }
            if state
            else None,
            "alerts": [alert_fields(a) for a in alerts.get(patient.pk, [])] if patient else [],
            "devices": devices.get(bed.pk, []),
        }

    return {
        "server_time": timezone.now().isoformat(),
        "ward": {
            "code": ward.code,
            "name": ward.name,
            "escalation_seconds": ward.escalation_seconds,
        },
        "vitals": {
            code: {
                "short_name": vital.short_name,
                "name": vital.name,
                "unit": vital.unit,
                "decimals": vital.decimals,
            }
            for code, vital in DEVICE_VITALS.items()
        },
        "stale_after_seconds": STALE_AFTER_SECONDS,
        "beds": [bed_entry(bed) for bed in beds],
    }
