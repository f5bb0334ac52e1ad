"""The records API, ``/api/v1/`` (included from config.urls).

Records are addressed by public id (UUID) and wards by code, never by database id. The device
ingestion endpoint, ``/api/v1/ingest/``, is not here: it is a plain async view on its own lean
ASGI path (config.asgi, monitoring.api), listed in config.urls.
"""

from __future__ import annotations

from django.urls import path

import config.openapi  # noqa: F401 - registers the Token security scheme with drf-spectacular
from alerts import rest as alerts_rest
from monitoring import rest as monitoring_rest
from patients import rest as patients_rest

app_name = "api"

urlpatterns = [
    path("wards/", patients_rest.WardListApi.as_view(), name="ward-list"),
    path("wards/<str:code>/", patients_rest.WardDetailApi.as_view(), name="ward-detail"),
    path(
        "wards/<str:code>/latest-vitals/",
        monitoring_rest.WardLatestVitalsApi.as_view(),
        name="ward-latest-vitals",
    ),
    path("beds/", patients_rest.BedListApi.as_view(), name="bed-list"),
    path("beds/<str:id>/", patients_rest.BedDetailApi.as_view(), name="bed-detail"),
    path("patients/", patients_rest.PatientListApi.as_view(), name="patient-list"),
    path("patients/<str:id>/", patients_rest.PatientDetailApi.as_view(), name="patient-detail"),
    path("patients/<str:id>/news2/", alerts_rest.PatientNews2Api.as_view(), name="patient-news2"),
    path("admissions/", patients_rest.AdmissionListCreateApi.as_view(), name="admission-list"),
    path(
        "admissions/<str:id>/",
        patients_rest.AdmissionDetailApi.as_view(),
        name="admission-detail",
    ),
    path(
        "admissions/<str:id>/transfer/",
        patients_rest.AdmissionTransferApi.as_view(),
        name="admission-transfer",
    ),
    path(
        "admissions/<str:id>/discharge/",
        patients_rest.AdmissionDischargeApi.as_view(),
        name="admission-discharge",
    ),
    path("devices/", monitoring_rest.DeviceListApi.as_view(), name="device-list"),
    path("devices/<str:id>/", monitoring_rest.DeviceDetailApi.as_view(), name="device-detail"),
    path("devices/<str:id>/token/", monitoring_rest.DeviceTokenApi.as_view(), name="device-token"),
    path("observations/", monitoring_rest.ObservationListApi.as_view(), name="observation-list"),
    path(
        "observations/trend/",
        monitoring_rest.ObservationTrendApi.as_view(),
        name="observation-trend",
    ),
    path(
        "observations/staff-entered/",
        monitoring_rest.StaffObservationCreateApi.as_view(),
        name="observation-staff-entered",
    ),
    path("alerts/", alerts_rest.AlertListApi.as_view(), name="alert-list"),
    path("alerts/<str:id>/", alerts_rest.AlertDetailApi.as_view(), name="alert-detail"),
    path(
        "alerts/<str:id>/acknowledge/",
        alerts_rest.AlertAcknowledgeApi.as_view(),
        name="alert-acknowledge",
    ),
    path("alerts/<str:id>/resolve/", alerts_rest.AlertResolveApi.as_view(), name="alert-resolve"),
    path("alert-rules/", alerts_rest.AlertRuleListCreateApi.as_view(), name="alert-rule-list"),
    path(
        "alert-rules/<str:id>/",
        alerts_rest.AlertRuleDetailApi.as_view(),
        name="alert-rule-detail",
    ),
]
