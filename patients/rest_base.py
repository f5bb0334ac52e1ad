"""How every records-API view behaves (``/api/v1/``), whichever app its records belong to.

- GET requests read from the replica when one is configured (``reads_from_replica``).
- A device credential is refused with 401: it is for ``/api/v1/ingest/`` only.
- Unauthenticated requests get 401 with ``WWW-Authenticate: Token`` (not DRF's 403, which it
  gives when the first authentication class is the session's).
- Records are addressed by public id; an id that is malformed, unknown or of a ward the
  caller may not see is the same 404.
- Reads of patients' records are audited in one INSERT per request (``RecordsApi.audit``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import exceptions, serializers
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from config.routers import reads_from_replica
from patients.api_access import ApiTokenAuthentication, request_token
from patients.audit import access_record, client_address

M = TypeVar("M", bound=Model)

DEVICE_SCHEME = "Device"  # monitoring.api.AUTH_SCHEME; patients must not import monitoring


class PagePagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class ObservedAtCursorPagination(CursorPagination):
    """Newest first; ``pk`` breaks ties between readings taken at the same instant."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = ("-observed_at", "-pk")


class RecordsApi(GenericAPIView):
    """Base of every records-API view. ``audit_action`` names what a GET reads, for the log."""

    audit_action: str = ""
    # JSON only: one way to send a body (anything else answers 415).
    parser_classes = [JSONParser]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method in ("GET", "HEAD"):
            # A replica lags: only reads go there, and every write in a GET (the audit row,
            # a token's last use) is routed to the primary by config.routers.
            with reads_from_replica():
                return super().dispatch(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    def perform_authentication(self, request: Request) -> None:
        scheme, _, _ = request.headers.get("Authorization", "").partition(" ")
        if scheme == DEVICE_SCHEME:
            raise exceptions.AuthenticationFailed(
                "Device credentials are accepted by /api/v1/ingest/ only."
            )
        super().perform_authentication(request)

    def get_authenticate_header(self, request: Request) -> str:
        return ApiTokenAuthentication().authenticate_header(request)

    def audit(self, *, patient_ids: Iterable[int | None]) -> None:
        """Record that this request read the records of ``patient_ids`` (one INSERT)."""
        access_record(
            user=self.request.user,
            token=request_token(self.request),
            patient_ids=[patient_id for patient_id in patient_ids if patient_id is not None],
            action=self.audit_action,
            resource=self.request.path,
            address=client_address(self.request),
        )

    def filters(self, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
        """The query parameters, validated by ``serializer_class`` (400 when invalid)."""
        serializer = serializer_class(data=self.request.query_params, context=self.context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def context(self) -> dict[str, Any]:
        return {"request": self.request}

    def paginated(
        self,
        queryset: QuerySet[M],
        output: type[serializers.Serializer],
        *,
        patient_of: Callable[[M], int | None] | None = None,
    ) -> Response:
        """One page of ``queryset``; with ``patient_of``, the read of its patients is audited."""
        page = self.paginate_queryset(queryset) or []
        if patient_of is not None:
            self.audit(patient_ids=(patient_of(row) for row in page))
        return self.get_paginated_response(output(page, many=True, context=self.context()).data)


def public_id_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise exceptions.NotFound() from None


def visible_or_404(queryset: QuerySet[M], **lookup: Any) -> M:
    """The one record of ``queryset`` (already scoped to the caller) matching ``lookup``."""
    found = queryset.filter(**lookup).first()
    if found is None:
        raise exceptions.NotFound()
    return found


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that must carry its UTC offset: a naive time is ambiguous."""

    default_error_messages = {
        "naive": "Give the time with its UTC offset, e.g. 2026-11-21T10:00:00Z or +01:00.",
    }

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None
            if parsed is not None and timezone.is_naive(parsed):
                self.fail("naive")
        return super().to_internal_value(value)


class PublicIdField(serializers.UUIDField):
    """A reference to a record by public id, among those ``visible(user=...)`` returns.

    Unknown and invisible records get the same answer, so a reference reveals nothing.
    """

    default_error_messages = {"does_not_exist": "No such record."}

    def __init__(self, *, visible: Callable[..., QuerySet[Any]], **kwargs: Any) -> None:
        self.visible = visible
        super().__init__(**kwargs)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        public_id = super().run_validation(data)
        if public_id is None:
            return None
        found = self.visible(user=self.context["request"].user).filter(public_id=public_id).first()
        if found is None:
            self.fail("does_not_exist")
        return found

    def to_representation(self, value: Any) -> Any:
        return str(value.public_id)


class WardCodeField(serializers.SlugField):
    """A ward by its code, among those ``visible(user=...)`` returns."""

    default_error_messages = {"does_not_exist": "No such ward."}

    def __init__(self, *, visible: Callable[..., QuerySet[Any]], **kwargs: Any) -> None:
        self.visible = visible
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # After the slug's own validators (length), which must see the code, not the ward.
        code = super().run_validation(data)
        if code is None:
            return None
        found = self.visible(user=self.context["request"].user).filter(code=code).first()
        if found is None:
            self.fail("does_not_exist")
        return found

    def to_representation(self, value: Any) -> Any:
        return value.code


def range_fields(fields: dict[str, serializers.Field]) -> dict[str, serializers.Field]:
    """Add ``from`` (inclusive) and ``to`` (exclusive), names Python cannot declare."""
    fields["from"] = AwareDateTimeField(
        required=False, help_text="Inclusive lower bound, ISO 8601 with UTC offset."
    )
    fields["to"] = AwareDateTimeField(
        required=False, help_text="Exclusive upper bound, ISO 8601 with UTC offset."
    )
    return fields


def range_validate(attrs: dict[str, Any]) -> dict[str, Any]:
    start, end = attrs.get("from"), attrs.get("to")
    if start is not None and end is not None and start >= end:
        raise serializers.ValidationError({"to": ["'to' must be after 'from'."]})
    return attrs
