"""Who gets what from each records-API endpoint, for a record in ward A and one in ward B.

Roles: ``anon`` (no credentials), ``cl_a`` and ``cl_b`` (clinicians of ward A and of ward B,
by session), ``admin`` (an administrator, by session), ``tok_a`` (an API token of clinician A
with scope "read" only), ``device`` (a valid device credential, ``Authorization: Device``).

Cells: the status code. For lists, ``200+`` means the ward's record is listed and ``200-`` that
it is not (the ward's code does not appear in the results). A record of a ward the caller may
not see is a 404, never a 403; a reference to one in a request body is a 400 ("No such
record"), like a reference to nothing. Each role's request runs in a savepoint that is rolled
back, so every cell starts from the same hospital.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from tests.api.hospital import Hospital, WardRecords, session_client, token_client

pytestmark = pytest.mark.django_db

ROLES = ("anon", "cl_a", "cl_b", "admin", "tok_a", "device")

MATRIX = """
request                                       | ward | anon | cl_a | cl_b | admin | tok_a | device
GET    /wards/                                | A    | 401  | 200+ | 200- | 200+  | 200+  | 401
GET    /wards/                                | B    | 401  | 200- | 200+ | 200+  | 200-  | 401
GET    /wards/{ward}/                         | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /wards/{ward}/                         | B    | 401  | 404  | 200  | 200   | 404   | 401
GET    /beds/                                 | A    | 401  | 200+ | 200- | 200+  | 200+  | 401
GET    /beds/                                 | B    | 401  | 200- | 200+ | 200+  | 200-  | 401
GET    /beds/{bed}/                           | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /beds/{bed}/                           | B    | 401  | 404  | 200  | 200   | 404   | 401
GET    /patients/                             | A    | 401  | 200+ | 200- | 200+  | 200+  | 401
GET    /patients/                             | B    | 401  | 200- | 200+ | 200+  | 200-  | 401
GET    /patients/{patient}/                   | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /patients/{patient}/                   | B    | 401  | 404  | 200  | 200   | 404   | 401
GET    /patients/{patient}/news2/             | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /patients/{patient}/news2/             | B    | 401  | 404  | 200  | 200   | 404   | 401
GET    /admissions/                           | A    | 401  | 200+ | 200- | 200+  | 200+  | 401
GET    /admissions/                           | B    | 401  | 200- | 200+ | 200+  | 200-  | 401
POST   /admissions/ admit                     | A    | 401  | 403  | 403  | 201   | 403   | 401
POST   /admissions/ admit                     | B    | 401  | 403  | 403  | 201   | 403   | 401
GET    /admissions/{admission}/               | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /admissions/{admission}/               | B    | 401  | 404  | 200  | 200   | 404   | 401
POST   /admissions/{admission}/transfer/ move | A    | 401  | 403  | 403  | 201   | 403   | 401
POST   /admissions/{admission}/transfer/ move | B    | 401  | 403  | 403  | 201   | 403   | 401
POST   /admissions/{admission}/discharge/     | A    | 401  | 403  | 403  | 200   | 403   | 401
POST   /admissions/{admission}/discharge/     | B    | 401  | 403  | 403  | 200   | 403   | 401
GET    /devices/                              | A    | 401  | 403  | 403  | 200+  | 403   | 401
GET    /devices/                              | B    | 401  | 403  | 403  | 200+  | 403   | 401
GET    /devices/{device}/                     | A    | 401  | 403  | 403  | 200   | 403   | 401
GET    /devices/{device}/                     | B    | 401  | 403  | 403  | 200   | 403   | 401
POST   /devices/{device}/token/               | A    | 401  | 403  | 403  | 201   | 403   | 401
POST   /devices/{device}/token/               | B    | 401  | 403  | 403  | 201   | 403   | 401
DELETE /devices/{device}/token/               | A    | 401  | 403  | 403  | 204   | 403   | 401
DELETE /devices/{device}/token/               | B    | 401  | 403  | 403  | 204   | 403   | 401
GET    /observations/?patient={patient}       | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /observations/?patient={patient}       | B    | 401  | 404  | 200  | 200   | 404   | 401
GET    /observations/trend/?patient={patient} | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /observations/trend/?patient={patient} | B    | 401  | 404  | 200  | 200   | 404   | 401
POST   /observations/staff-entered/ acvpu     | A    | 401  | 201  | 400  | 201   | 403   | 401
POST   /observations/staff-entered/ acvpu     | B    | 401  | 400  | 201  | 201   | 403   | 401
GET    /alerts/                               | A    | 401  | 200+ | 200- | 200+  | 200+  | 401
GET    /alerts/                               | B    | 401  | 200- | 200+ | 200+  | 200-  | 401
GET    /alerts/{alert}/                       | A    | 401  | 200  | 404  | 200   | 200   | 401
GET    /alerts/{alert}/                       | B    | 401  | 404  | 200  | 200   | 404   | 401
POST   /alerts/{alert}/acknowledge/           | A    | 401  | 200  | 404  | 200   | 403   | 401
POST   /alerts/{alert}/acknowledge/           | B    | 401  | 404  | 200  | 200   | 403   | 401
POST   /alerts/{alert}/resolve/               | A    | 401  | 200  | 404  | 200   | 403   | 401
POST   /alerts/{alert}/resolve/               | B    | 401  | 404  | 200  | 200   | 403   | 401
GET    /alert-rules/                          | A    | 401  | 200+ | 200+ | 200+  | 200+  | 401
GET    /alert-rules/                          | B    | 401  | 200+ | 200+ | 200+  | 200+  | 401
POST   /alert-rules/ rule                     | A    | 401  | 403  | 403  | 201   | 403   | 401
POST   /alert-rules/ rule                     | B    | 401  | 403  | 403  | 201   | 403   | 401
GET    /alert-rules/{rule}/                   | A    | 401  | 200  | 200  | 200   | 200   | 401
GET    /alert-rules/{rule}/                   | B    | 401  | 200  | 200  | 200   | 200   | 401
PATCH  /alert-rules/{rule}/ disable           | A    | 401  | 403  | 403  | 200   | 403   | 401
PATCH  /alert-rules/{rule}/ disable           | B    | 401  | 403  | 403  | 200   | 403   | 401
DELETE /alert-rules/{unused_rule}/            | A    | 401  | 403  | 403  | 204   | 403   | 401
DELETE /alert-rules/{unused_rule}/            | B    | 401  | 403  | 403  | 204   | 403   | 401
"""

# The request bodies named in the table.
BODIES: dict[str, dict[str, Any]] = {
    "admit": {"patient": "{unadmitted}", "bed": "{free_bed}"},
    "move": {"bed": "{free_bed}"},
    "acvpu": {"patient": "{patient}", "code": "local-acvpu", "value": 0},
    "rule": {
        "name": "HR high",
        "code": "8867-4",
        "high": 150,
        "priority": "medium",
        "ward": "{ward}",
    },
    "disable": {"enabled": False},
}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    body: str | None
    ward: str
    expected: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.path}{' ' + self.body if self.body else ''} [{self.ward}]"


def _rows() -> list[Row]:
    lines = [line for line in MATRIX.strip().splitlines()[1:] if line.strip()]
    rows = []
    for line in lines:
        request, ward, *cells = (cell.strip() for cell in line.split("|"))
        method, path, *body = request.split()
        assert len(cells) == len(ROLES), line
        rows.append(Row(method, path, body[0] if body else None, ward, tuple(cells)))
    return rows


def _ids(records: WardRecords) -> dict[str, str]:
    return {
        "ward": records.ward.code,
        "bed": str(records.bed.public_id),
        "free_bed": str(records.free_bed.public_id),
        "patient": str(records.patient.public_id),
        "unadmitted": str(records.unadmitted.public_id),
        "admission": str(records.admission.public_id),
        "device": str(records.device.public_id),
        "alert": str(records.alert.public_id),
        "rule": str(records.rule.public_id),
        "unused_rule": str(records.unused_rule.public_id),
    }


def _client(role: str, hospital: Hospital, records: WardRecords) -> APIClient:
    if role == "anon":
        return APIClient()
    if role == "tok_a":
        return token_client(hospital.token_a_read)
    if role == "device":
        return token_client(records.device_token, scheme="Device")
    user = {"cl_a": hospital.clinician_a, "cl_b": hospital.clinician_b, "admin": hospital.admin}
    return session_client(user[role])


def _outcome(row: Row, role: str, hospital: Hospital, records: WardRecords) -> str:
    ids = _ids(records)
    path = "/api/v1" + row.path.format(**ids)
    body = {
        key: value.format(**ids) if isinstance(value, str) else value
        for key, value in BODIES.get(row.body or "", {}).items()
    }
    client = _client(role, hospital, records)
    with transaction.atomic():
        response = client.generic(
            row.method,
            path,
            data=json.dumps(body) if row.body else "",
            content_type="application/json",
        )
        transaction.set_rollback(True)
    outcome = str(response.status_code)
    if response.status_code == 200 and isinstance(response.json(), dict):
        results = response.json().get("results")
        if results is not None and "series" not in response.json():
            listed = f'"{ids["ward"]}"' in json.dumps(results)
            outcome += "+" if listed else "-"
    return outcome


@pytest.mark.parametrize("row", _rows(), ids=str)
def test_it_answers_each_role_as_the_matrix_says(row: Row, hospital: Hospital) -> None:
    records = hospital.a if row.ward == "A" else hospital.b
    expected = dict(zip(ROLES, row.expected, strict=True))
    actual = {role: _outcome(row, role, hospital, records) for role in ROLES}
    # A list whose records carry no ward code (observations, NEWS2) is only checked for 200.
    actual = {
        role: value if expected[role][-1] in "+-" else value.rstrip("+-")
        for role, value in actual.items()
    }
    assert actual == expected
