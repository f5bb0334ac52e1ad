"""Clinician pages. Every page is scoped to the wards the user may see."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from patients.selectors import beds_with_current_admission, ward_visible_to, wards_visible_to


@login_required
def ward_list(request: HttpRequest) -> HttpResponse:
    wards = wards_visible_to(user=request.user).order_by("code")
    return render(request, "portal/ward_list.html", {"wards": wards})


@login_required
def ward_dashboard(request: HttpRequest, ward_code: str) -> HttpResponse:
    # A ward the user may not see is answered exactly like one that does not exist.
    ward = ward_visible_to(user=request.user, ward_code=ward_code)
    if ward is None:
        raise Http404("No such ward.")
    beds = beds_with_current_admission(ward=ward)
    return render(request, "portal/ward_dashboard.html", {"ward": ward, "beds": beds})
