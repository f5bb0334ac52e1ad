"""The records API's OpenAPI document and its documentation pages.

- The error shapes every endpoint answers with (``errors(...)``), with examples.
- The ``Token`` security scheme (``patients.api_access.ApiTokenAuthentication``).
- The device ingestion endpoint, a plain async Django view drf-spectacular cannot see, added
  by a postprocessing hook with its ``Device`` security scheme.
- Swagger UI and ReDoc, served from the sidecar's static files under the portal's strict CSP.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from csp.decorators import csp_update
from django.http import HttpResponse
from django.template import Context, Engine
from django.template.loader import get_template
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework import serializers
from rest_framework.request import Request

from monitoring.ingestion import MAX_MESSAGE_ID_LENGTH, MAX_OBSERVATIONS
from monitoring.vitals import DEVICE_VITALS, VITALS

# Enum components (SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
VITAL_CODES = [(vital.code, vital.name) for vital in VITALS.values()]
STAFF_ENTERED_CODES = [
    (vital.code, vital.name) for vital in VITALS.values() if not vital.posted_by_devices
]
DEVICE_CODES = [vital.code for vital in DEVICE_VITALS.values()]


class Example:
    """The ward code and public ids the documentation's examples use. tests/api build records
    with them, so the examples (and schemathesis' examples phase) run against real records."""

    WARD = "amu"
    PATIENT = "6f1c2a4e-3b7d-4e8a-9c1f-0a2b3c4d5e6f"
    BED = "0b9e1f52-55a1-4c43-8a57-2f1e4b7c9d10"
    ADMISSION = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f"
    DEVICE = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    ALERT = "2d3e4f50-6172-4839-94a5-b6c7d8e9f0a1"
    RULE = "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b"


def public_id_parameter(example: str) -> OpenApiParameter:
    """The ``{id}`` of a record's URL: its public id (never its database id)."""
    return OpenApiParameter(
        "id",
        OpenApiTypes.UUID,
        OpenApiParameter.PATH,
        description="The record's public id.",
        examples=[OpenApiExample("example", value=example)],
    )


def ward_code_parameter() -> OpenApiParameter:
    return OpenApiParameter(
        "code",
        {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$", "maxLength": 32},
        OpenApiParameter.PATH,
        description="The ward's code.",
        examples=[OpenApiExample("example", value=Example.WARD)],
    )


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable and machine-readable.")
    detail = serializers.CharField(help_text="For people.")


class ValidationErrorSerializer(ErrorSerializer):
    # The metaclass takes declared fields out of the class body, so this does not shadow
    # Serializer.fields.
    fields = serializers.DictField(  # type: ignore[assignment]  # see above
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="The messages for each invalid field (or query parameter); absent when the "
        "body could not be read at all (code parse_error).",
    )


_ERRORS: dict[int, tuple[str, type[serializers.Serializer], dict[str, Any]]] = {
    400: (
        "Invalid request: nothing was changed.",
        ValidationErrorSerializer,
        {
            "code": "invalid",
            "detail": "The request is invalid; see fields.",
            "fields": {"bed": ["No such record."]},
        },
    ),
    401: (
        "No credentials, unknown or revoked token, or a device credential (those are for "
        "/api/v1/ingest/ only).",
        ErrorSerializer,
        {"code": "not_authenticated", "detail": "Authentication credentials were not provided."},
    ),
    403: (
        "The caller may not do this (administrators only, or the token lacks the scope).",
        ErrorSerializer,
        {"code": "permission_denied", "detail": "This API token's scopes do not allow this."},
    ),
    404: (
        "No such record (or page), or one of a ward the caller may not see.",
        ErrorSerializer,
        {"code": "not_found", "detail": "Not found."},
    ),
    409: (
        "Refused: the record's current state does not allow it.",
        ErrorSerializer,
        {"code": "bed_occupied", "detail": "Bed AMU / 3 already holds an admitted patient."},
    ),
    429: (
        "Over this credential's rate; see Retry-After.",
        ErrorSerializer,
        {"code": "throttled", "detail": "Request was throttled. Expected available in 12 seconds."},
    ),
}


def errors(*statuses: int, conflict: dict[str, str] | None = None) -> dict[int, OpenApiResponse]:
    """The error responses of an endpoint: ``statuses`` plus 401, 403 and 429, which all have."""
    responses = {}
    for status in sorted({*statuses, 401, 403, 429}):
        description, serializer, example = _ERRORS[status]
        if status == 409 and conflict is not None:
            example = conflict
        responses[status] = OpenApiResponse(
            serializer,
            description=description,
            examples=[OpenApiExample(f"{status}", value=example, status_codes=[status])],
        )
    return responses


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "patients.api_access.ApiTokenAuthentication"
    name = "Token"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>`: an API token issued by an administrator, limited "
            "to its scopes (read, acknowledge, write) and acting as its user.",
        }


def records_api_only(endpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Preprocessing hook: this document describes /api/v1/ (the FHIR façade has its own)."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]


# The device ingestion endpoint (monitoring/api.py, README "Device ingestion API").

_INGEST_PATH = "/api/v1/ingest/"
_UNITS = sorted({unit for vital in DEVICE_VITALS.values() for unit in vital.accepted_units})
_INGEST_SCHEMAS: dict[str, Any] = {
    "DeviceMessage": {
        "type": "object",
        "additionalProperties": False,
        "required": ["message_id", "observations"],
        "properties": {
            "message_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_MESSAGE_ID_LENGTH,
                "description": "The device's id for this message: a retry resends the same "
                "message_id and body and gets the original answer.",
            },
            "observations": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_OBSERVATIONS,
                "items": {"$ref": "#/components/schemas/DeviceObservation"},
            },
        },
    },
    "DeviceObservation": {
        "type": "object",
        "additionalProperties": False,
        "required": ["code", "value", "unit", "observed_at"],
        "properties": {
            "code": {"type": "string", "enum": DEVICE_CODES, "description": "LOINC code."},
            "value": {"type": "number", "description": "Inside the vital's plausible band."},
            "unit": {"type": "string", "enum": _UNITS, "description": "UCUM unit."},
            "observed_at": {
                "type": "string",
                "format": "date-time",
                "description": "With a UTC offset; from 2020 to at most 2 minutes ahead.",
            },
            "artifact": {
                "type": "boolean",
                "default": False,
                "description": "The device marks the reading unreliable: stored, never alarmed on.",
            },
        },
    },
    "DeviceMessageAccepted": {
        "type": "object",
        "required": ["message_id", "accepted", "patient"],
        "properties": {
            "message_id": {"type": "string"},
            "accepted": {"type": "integer"},
            "patient": {"type": "string", "format": "uuid", "nullable": True},
            "unassigned": {"type": "integer"},
            "warning": {"type": "string"},
        },
    },
    "DeviceMessageRefused": {
        "type": "object",
        "required": ["code", "detail"],
        "properties": {
            "code": {"type": "string"},
            "detail": {"type": "string"},
            "field": {"type": "string"},
            "index": {"type": "integer"},
        },
    },
}


def _ingest_response(
    description: str, code: str, detail: str, *, retry_after: bool = False, **extra: Any
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/DeviceMessageRefused"},
                "examples": {code: {"value": {"code": code, "detail": detail, **extra}}},
            }
        },
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}
        }
    return response


_INGEST_OPERATION: dict[str, Any] = {
    "operationId": "ingest_create",
    "tags": ["ingest"],
    "summary": "Post a device's readings",
    "description": "Bedside devices only, with `Authorization: Device <token>`; JSON, at most "
    "1 MiB, 1 to 1,000 observations. Each reading is attached to the patient admitted to the "
    "device's bed at observed_at. A retry with the same message_id and body gets the "
    "original answer and stores nothing. A message with any invalid observation is refused "
    "whole.",
    "security": [{"Device": []}],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/DeviceMessage"},
                "examples": {
                    "heart rate and SpO2": {
                        "value": {
                            "message_id": "monitor-42-000187",
                            "observations": [
                                {
                                    "code": "8867-4",
                                    "value": 72,
                                    "unit": "/min",
                                    "observed_at": "2026-11-21T10:00:00.123Z",
                                },
                                {
                                    "code": "59408-5",
                                    "value": 96,
                                    "unit": "%",
                                    "observed_at": "2026-11-21T10:00:00.123Z",
                                    "artifact": False,
                                },
                            ],
                        }
                    }
                },
            }
        },
    },
    "responses": {
        "201": {
            "description": "Stored (after commit), or a retry of a stored message.",
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/DeviceMessageAccepted"},
                    "examples": {
                        "stored": {
                            "value": {
                                "message_id": "monitor-42-000187",
                                "accepted": 2,
                                "patient": Example.PATIENT,
                            }
                        }
                    },
                }
            },
        },
        "400": _ingest_response(
            "Invalid message; nothing is stored.",
            "implausible_value",
            "Heart rate 400 /min is outside the plausible range 0–350 /min: a device or "
            "input error.",
            field="observations[0].value",
            index=0,
        ),
        "401": {
            **_ingest_response(
                "Missing, unknown or revoked token; inactive device.",
                "invalid_credentials",
                "Unknown or revoked device token.",
            ),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "413": _ingest_response(
            "Over 1 MiB.", "payload_too_large", "A message is at most 1 MiB; split the batch."
        ),
        "415": _ingest_response(
            "Not JSON (or not UTF-8).",
            "unsupported_media_type",
            "Send the message as application/json.",
        ),
        "422": _ingest_response(
            "message_id reused with a different body.",
            "message_id_conflict",
            "This message_id was already used for a different message; a retry must resend "
            "the same body, a new message needs a new message_id.",
            field="message_id",
        ),
        "429": _ingest_response(
            "The device is over its rate (default 10 messages/s, burst 30).",
            "rate_limited",
            "This device is sending faster than its allowance; retry the same message later.",
            retry_after=True,
        ),
        "503": _ingest_response(
            "Storage unavailable or the portal saturated: nothing acknowledged; retry the same "
            "message.",
            "storage_unavailable",
            "The message could not be stored; retry the same message.",
            retry_after=True,
        ),
    },
}


def add_device_ingestion(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Postprocessing hook: the device endpoint and its ``Device`` security scheme."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(_INGEST_SCHEMAS)
    components.setdefault("securitySchemes", {})["Device"] = {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Device <token>`: a bedside device's credential, shown once when an "
        "administrator issues or rotates it. Accepted by /api/v1/ingest/ only.",
    }
    result.setdefault("paths", {})[_INGEST_PATH] = {"post": _INGEST_OPERATION}
    tags = result.setdefault("tags", [])
    if not any(tag.get("name") == "ingest" for tag in tags):
        tags.append({"name": "ingest", "description": "Bedside devices post readings."})
    return result


# The documentation pages. The portal's CSP allows only 'self' (config/settings.py); each page
# widens it for itself alone, as little as its viewer needs.


def _inline_style_hashes(template_name: str) -> list[str]:
    """CSP hashes of a template's static inline ``<style>`` blocks."""
    source = get_template(template_name).template.source  # type: ignore[attr-defined]
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"
        for block in re.findall(r"<style>(.*?)</style>", source, flags=re.DOTALL)
    ]


# drf-spectacular's page, with its script in a file of its own (the split view): only the
# page's own static <style> block needs allowing.
swagger_view = csp_update(
    {"style-src": _inline_style_hashes(SpectacularSwaggerSplitView.template_name)}
)(SpectacularSwaggerSplitView.as_view(url_name="api-schema"))

_REDOC_PAGE = Engine.get_default().from_string(
    """<!DOCTYPE html>
<html lang="en">
  <head>
    <title>{{ title }}</title>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="{{ schema_url }}"></redoc>
    <script src="{{ redoc_standalone }}"></script>
  </body>
</html>
"""
)


class RedocView(SpectacularRedocView):
    """drf-spectacular's ReDoc page without its Google Fonts: hospitals run on closed networks,
    and the page must reference nothing but the portal itself."""

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        context = {
            "title": self.title,
            "schema_url": self._get_schema_url(request),
            "redoc_standalone": self._redoc_standalone(),
        }
        return HttpResponse(_REDOC_PAGE.render(Context(context)))


# ReDoc styles its widgets with <style> elements it creates (styled-components), so styles,
# never scripts, may be inline on this page; its search runs in a worker made from a blob.
redoc_view = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]})(
    RedocView.as_view(url_name="api-schema")
)
schema_view = SpectacularAPIView.as_view()
