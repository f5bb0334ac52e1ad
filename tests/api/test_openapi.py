"""The OpenAPI document: valid, complete (schemas and examples everywhere), device endpoint
included; and its documentation pages, served by the portal itself under a strict CSP."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def document(django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_it_generates_a_valid_openapi_3_document(document: dict[str, Any]) -> None:
    validate_schema(document)  # raises on any violation of the OpenAPI 3.0 JSON schema
    assert document["openapi"].startswith("3.")


def test_it_documents_every_records_endpoint(document: dict[str, Any]) -> None:
    documented = {(path, method) for path, method, _ in _operations(document)}
    assert {
        ("/api/v1/wards/", "get"),
        ("/api/v1/wards/{code}/", "get"),
        ("/api/v1/wards/{code}/latest-vitals/", "get"),
        ("/api/v1/beds/", "get"),
        ("/api/v1/beds/{id}/", "get"),
        ("/api/v1/patients/", "get"),
        ("/api/v1/patients/{id}/", "get"),
        ("/api/v1/patients/{id}/news2/", "get"),
        ("/api/v1/admissions/", "get"),
        ("/api/v1/admissions/", "post"),
        ("/api/v1/admissions/{id}/", "get"),
        ("/api/v1/admissions/{id}/transfer/", "post"),
        ("/api/v1/admissions/{id}/discharge/", "post"),
        ("/api/v1/devices/", "get"),
        ("/api/v1/devices/{id}/", "get"),
        ("/api/v1/devices/{id}/token/", "post"),
        ("/api/v1/devices/{id}/token/", "delete"),
        ("/api/v1/observations/", "get"),
        ("/api/v1/observations/trend/", "get"),
        ("/api/v1/observations/staff-entered/", "post"),
        ("/api/v1/alerts/", "get"),
        ("/api/v1/alerts/{id}/", "get"),
        ("/api/v1/alerts/{id}/acknowledge/", "post"),
        ("/api/v1/alerts/{id}/resolve/", "post"),
        ("/api/v1/alert-rules/", "get"),
        ("/api/v1/alert-rules/", "post"),
        ("/api/v1/alert-rules/{id}/", "get"),
        ("/api/v1/alert-rules/{id}/", "patch"),
        ("/api/v1/alert-rules/{id}/", "delete"),
        ("/api/v1/ingest/", "post"),
    } == documented


def test_it_gives_every_operation_schemas_and_examples(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        label = f"{method.upper()} {path}"
        responses = operation["responses"]
        assert {"401", "429"} <= set(responses), label
        for status, response in responses.items():
            if status == "204":
                continue
            content = response["content"]["application/json"]
            assert "schema" in content, f"{label} {status}"
            assert content.get("examples"), f"{label} {status} has no example"
        body = operation.get("requestBody")
        if body is not None:
            content = body["content"]["application/json"]
            assert "schema" in content, label
            assert content.get("examples"), f"{label} request has no example"
            assert set(body["content"]) == {"application/json"}, label


def test_it_documents_the_device_ingestion_endpoint(document: dict[str, Any]) -> None:
    operation = document["paths"]["/api/v1/ingest/"]["post"]
    assert set(operation["responses"]) == {
        "201",
        "400",
        "401",
        "413",
        "415",
        "422",
        "429",
        "503",
    }
    assert operation["security"] == [{"Device": []}]
    assert document["components"]["securitySchemes"]["Device"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": document["components"]["securitySchemes"]["Device"]["description"],
    }
    request = operation["requestBody"]["content"]["application/json"]
    assert request["schema"] == {"$ref": "#/components/schemas/DeviceMessage"}
    assert document["components"]["schemas"]["DeviceMessage"]["required"] == [
        "message_id",
        "observations",
    ]


def test_it_documents_the_token_scheme_and_not_the_fhir_facade(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["Token"]["in"] == "header"
    assert all(path.startswith("/api/v1/") for path in document["paths"])


def _csp(response: Any) -> dict[str, list[str]]:
    directives = (part.strip().split() for part in response["Content-Security-Policy"].split(";"))
    return {words[0]: words[1:] for words in directives if words}


def test_it_serves_swagger_ui_with_only_its_own_style_block_allowed() -> None:
    page = Client().get("/api/docs/")
    script = Client().get("/api/docs/", {"script": ""})
    assert page.status_code == 200
    csp = _csp(page)
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"][0] == "'self'"
    assert all(source.startswith("'sha256-") for source in csp["style-src"][1:])
    assert b"<script>" not in page.content  # no inline script: the init script is a file
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page.content
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")


def test_it_serves_redoc_from_the_portal_alone() -> None:
    page = Client().get("/api/redoc/")
    assert page.status_code == 200
    csp = _csp(page)
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"]
    assert csp["worker-src"] == ["blob:"]
    assert b"<script>" not in page.content
    assert b"//" not in page.content.replace(b"<!DOCTYPE html>", b"")  # nothing off-site
    assert b"/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in page.content


def test_it_keeps_the_strict_policy_everywhere_else() -> None:
    csp = _csp(Client().get("/api/schema/"))
    assert csp["style-src"] == ["'self'"]
    assert "worker-src" not in csp


def test_it_serves_the_viewers_from_the_portals_own_static_files() -> None:
    response = Client().get("/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")
    assert response.status_code == 200
