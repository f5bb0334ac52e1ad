"""Keeping a watched dashboard's session alive, and saying when it has ended."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST


@never_cache
@require_POST
def session_keepalive(request: HttpRequest) -> HttpResponse:
    """Called by an open ward dashboard every few minutes: a central-station screen is
    watched, not clicked, and must not be logged out for idleness. The session middleware
    (SESSION_SAVE_EVERY_REQUEST) slides its expiry forward."""
    if not request.user.is_authenticated:
        return JsonResponse(
            {"code": "session_ended", "detail": "Your session has ended; log in again."},
            status=401,
        )
    return HttpResponse(status=204)
