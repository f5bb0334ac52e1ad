"""FHIR R4 read-only routes, mounted at /fhir/ (see monitoring/fhir_views.py)."""

from __future__ import annotations

from django.urls import path, re_path

from monitoring import fhir_views

app_name = "fhir"

urlpatterns = [
    path("metadata", fhir_views.MetadataView.as_view(), name="metadata"),
    path("Patient/<str:patient_id>", fhir_views.PatientReadView.as_view(), name="patient-read"),
    path("Observation", fhir_views.ObservationSearchView.as_view(), name="observation-search"),
    # The base URL (for fullUrl) and everything else under it answer an OperationOutcome 404.
    path("", fhir_views.UnknownView.as_view(), name="base"),
    re_path(r"^.+$", fhir_views.UnknownView.as_view()),
]
