from __future__ import annotations

from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.ward_list, name="ward-list"),
    path("wards/<slug:ward_code>/", views.ward_dashboard, name="ward-dashboard"),
    path("patients/<uuid:patient_id>/", views.patient_page, name="patient"),
    path("patients/<uuid:patient_id>/trends.json", views.patient_trends, name="patient-trends"),
]
