"""FHIR R4 read-only endpoints under /fhir/ for other hospital systems.

Access is the records API's: a browser session or ``Authorization: Token <api token>`` with
the "read" scope, throttled per credential; device credentials are refused (401).
Clinicians see the patients admitted now to their wards, administrators every patient; a
patient you may not see answers 404 exactly like an unknown one, for ``Patient/<id>`` and
for an Observation search naming them. Every answer is ``application/fhir+json`` (also
``_format=json``); errors are OperationOutcome resources. Each successful read appends one
access-log row; reads go to the replica when one is configured.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from config.routers import reads_from_replica
from monitoring.fhir import (
    FHIR_JSON,
    SearchError,
    capability_statement,
    observation_fhir_id,
    observation_page,
    observation_resource,
    observation_search_parse,
    operation_outcome,
    patient_resource,
    searchset_bundle,
)
from patients.api_access import (
    ApiTokenAuthentication,
    PerCredentialThrottle,
    TokenScopes,
    request_token,
)
from patients.audit import access_record, client_address
from patients.models import Patient
from patients.selectors import patients_visible_to

# What a client may ask for and still get FHIR JSON (application/json+fhir is the DSTU2 name).
ACCEPTABLE_MEDIA_TYPES = frozenset(
    {"*/*", "application/*", FHIR_JSON, "application/json", "application/json+fhir"}
)
JSON_FORMATS = frozenset({"json", FHIR_JSON, "application/json", "application/json+fhir"})

ISSUE_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid",
    status.HTTP_401_UNAUTHORIZED: "login",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not-found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "not-supported",
    status.HTTP_406_NOT_ACCEPTABLE: "not-supported",
    status.HTTP_429_TOO_MANY_REQUESTS: "throttled",
}
PATIENT_NOT_FOUND = "No such patient."  # the same words for unknown and not-yours


class FhirJsonRenderer(JSONRenderer):
    media_type = FHIR_JSON
    format = "json"
    charset = "utf-8"


class FhirContentNegotiation(BaseContentNegotiation):
    """JSON only: ``_format`` (FHIR's override) wins over ``Accept``; anything else is 406."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> Any:
        return next(iter(parsers), None)

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        requested = request.query_params.get("_format")
        if requested is not None:
            if requested.strip().lower() not in JSON_FORMATS:
                raise exceptions.NotAcceptable("Only _format=json is supported.")
            return renderer, renderer.media_type
        accept = request.META.get("HTTP_ACCEPT", "").strip()
        if not accept or any(_acceptable(item) for item in accept.split(",")):
            return renderer, renderer.media_type
        raise exceptions.NotAcceptable("This server answers application/fhir+json only.")


def _acceptable(item: str) -> bool:
    media_type, *parameters = (part.strip().lower() for part in item.split(";"))
    refused = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in parameters)
    return media_type in ACCEPTABLE_MEDIA_TYPES and not refused


class InvalidSearch(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, error: SearchError) -> None:
        super().__init__(detail=error.detail, code=error.issue_code)
        self.issue_code = error.issue_code


def fhir_exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handling (status, WWW-Authenticate, Retry-After), with an OperationOutcome body."""
    response = exception_handler(error, context)
    if response is None:
        return None  # an unexpected error: Django logs it and answers 500
    issue_code = getattr(error, "issue_code", None) or ISSUE_CODES.get(
        response.status_code, "exception"
    )
    detail = getattr(error, "detail", None)
    response.data = operation_outcome(
        issue_code=issue_code,
        diagnostics=str(detail) if isinstance(detail, str) else response.status_text,
    )
    return response


class FhirView(APIView):
    # The token authenticator comes first so a missing credential answers 401 with
    # "WWW-Authenticate: Token" (DRF asks the first authenticator for the challenge; a
    # session-first view would answer 403).
    authentication_classes = [ApiTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated, TokenScopes]
    throttle_classes = [PerCredentialThrottle]
    renderer_classes = [FhirJsonRenderer]
    parser_classes: list[Any] = []
    content_negotiation_class = FhirContentNegotiation
    # Read-only; OPTIONS too is refused (405), as DRF's answer to it is not a FHIR resource.
    http_method_names = ["get", "head"]

    def get_exception_handler(self) -> Any:
        return fhir_exception_handler


def _base_url(request: Request) -> str:
    return request.build_absolute_uri(reverse("fhir:base"))


def _visible_patient(*, request: Request, public_id: uuid.UUID) -> Patient:
    patient = patients_visible_to(user=request.user).filter(public_id=public_id).first()
    if patient is None:
        raise exceptions.NotFound(PATIENT_NOT_FOUND)
    return patient


class PatientReadView(FhirView):
    def get(self, request: Request, patient_id: str) -> Response:
        try:
            public_id = uuid.UUID(patient_id)
        except ValueError:
            raise exceptions.NotFound(PATIENT_NOT_FOUND) from None
        with reads_from_replica():
            patient = _visible_patient(request=request, public_id=public_id)
        access_record(
            user=request.user,
            patient_ids=[patient.pk],
            action="fhir.patient.read",
            resource=f"Patient/{patient.public_id}",
            address=client_address(request),
            token=request_token(request),
        )
        return Response(patient_resource(patient))


class ObservationSearchView(FhirView):
    def get(self, request: Request) -> Response:
        params = {name: request.query_params.getlist(name) for name in request.query_params}
        try:
            search = observation_search_parse(params)
        except SearchError as error:
            raise InvalidSearch(error) from None
        with reads_from_replica():
            patient = _visible_patient(request=request, public_id=search.patient_public_id)
            page = observation_page(patient=patient, search=search)
        access_record(
            user=request.user,
            patient_ids=[patient.pk],
            action="fhir.observation.search",
            resource=f"Observation?{request.META.get('QUERY_STRING', '')}",
            address=client_address(request),
            token=request_token(request),
        )
        base = _base_url(request)
        subject = str(patient.public_id)
        entries = [
            (
                f"{base}Observation/{observation_fhir_id(observation.pk)}",
                observation_resource(observation, patient_public_id=subject),
            )
            for observation in page.observations
        ]
        next_url = None
        if page.next_cursor is not None:
            query: QueryDict = request.query_params.copy()
            query["_count"] = str(search.count)
            query["_cursor"] = page.next_cursor
            next_url = f"{request.build_absolute_uri(request.path)}?{query.urlencode()}"
        return Response(
            searchset_bundle(
                entries=entries, self_url=request.build_absolute_uri(), next_url=next_url
            )
        )


class MetadataView(FhirView):
    """The CapabilityStatement: what this server answers (authenticated like the rest)."""

    def get(self, request: Request) -> Response:
        today: dt.date = timezone.now().date()
        return Response(capability_statement(base_url=_base_url(request), date=today))


class UnknownView(FhirView):
    """Any other path under /fhir/: an OperationOutcome rather than an HTML 404."""

    def get(self, request: Request, **kwargs: Any) -> Response:
        raise exceptions.NotFound(
            "Not served here: this server answers GET Patient/<id>, GET Observation?patient=… "
            "and GET metadata."
        )
