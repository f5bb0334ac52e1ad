"""URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Ward portal administration"
admin.site.site_title = "Ward portal admin"
admin.site.index_title = "Hospital administration"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("portal.urls")),
]
