"""URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config.health import healthz, readyz
from config.metrics import metrics
from config.openapi import redoc_view, schema_view, swagger_view
from monitoring.api import ingest
from portal.session_views import session_keepalive

admin.site.site_header = "Ward portal administration"
admin.site.site_title = "Ward portal admin"
admin.site.index_title = "Hospital administration"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="portal/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/keepalive/", session_keepalive, name="session-keepalive"),
    # Served through config.asgi's lean path (no middleware); listed here so the URL resolves.
    path("api/v1/ingest/", ingest, name="ingest"),
    path("api/v1/", include("config.api_urls")),
    path("api/schema/", schema_view, name="api-schema"),
    path("api/docs/", swagger_view, name="api-docs"),
    path("api/redoc/", redoc_view, name="api-redoc"),
    path("fhir/", include("monitoring.fhir_urls")),
    path("", include("portal.urls")),
]
