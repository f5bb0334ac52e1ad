"""One shape for every records-API error: ``{"code", "detail", "fields"?}``."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class Conflict(exceptions.APIException):
    """A refused action (e.g. admitting into an occupied bed): 409 with the service's reason."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail=detail, code=code)
        self.error_code = code


def api_exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(error, context)
    if response is None:
        return None  # an unexpected error: Django logs it and answers 500
    if isinstance(error, Conflict):
        response.data = {"code": error.error_code, "detail": str(error.detail)}
    elif isinstance(error, exceptions.ValidationError):
        response.data = {
            "code": "invalid",
            "detail": "The request is invalid; see fields.",
            "fields": error.detail
            if isinstance(error.detail, dict)
            else {"non_field": error.detail},
        }
    elif isinstance(error, Http404 | exceptions.NotFound):
        response.data = {"code": "not_found", "detail": "Not found."}
    elif isinstance(error, exceptions.APIException):
        codes = error.get_codes()
        response.data = {
            "code": codes if isinstance(codes, str) else "error",
            "detail": str(error.detail),
        }
    return response
