"""Property-based: every records-API operation, fed input generated from the OpenAPI document
(valid and invalid), through the ASGI application daphne serves, never answers 500, and
answers only what the document says (status codes, content types, bodies, headers).

Setup: the document is loaded from ``/api/schema/`` of ``config.asgi.application``; requests
go through the same application, authenticated as an administrator's API token with every
scope (so writes are exercised, not just refused). The hospital's records carry the public ids
of the documented examples (``config.openapi.Example``), so the examples phase acts on real
records, while generated ids exercise the 404 paths. ``/api/v1/ingest/`` is left out: it is not
DRF, authenticates devices only, and has its own endpoint tests
(tests/monitoring/test_ingest_endpoint.py). The seed is fixed so CI runs are reproducible;
change it locally to explore further.

The application answers in threads of its own, with their own database connections, so the
records are committed (transactional database), and the throttle is lifted for the run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings, strategies
from schemathesis import GenerationMode, checks

from config.asgi import INGEST_PATH, application
from config.openapi import Example
from monitoring.models import Device
from patients.api_access import PerCredentialThrottle, api_token_issue
from patients.models import Admission, Bed
from tests import factories
from tests.api.hospital import alert_for, news2_for, observation_for, threshold_rule

pytestmark = pytest.mark.django_db(transaction=True)

# Generated cases per operation and mode (valid, invalid). Small: a handful of operations take
# most of the time, and the full run must stay well under a minute.
MAX_EXAMPLES = 10
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
HYPOTHESIS = settings(
    deadline=None,
    derandomize=True,  # reproducible in CI; raise MAX_EXAMPLES locally to explore
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _example_hospital() -> None:
    """A ward with one record of each kind under the documented example ids."""
    ward = factories.ward(code=Example.WARD, name="Acute Medical Unit")
    bed = Bed.objects.create(ward=ward, label="3", public_id=uuid.UUID(Example.BED))
    patient = factories.patient(public_id=uuid.UUID(Example.PATIENT))
    admission = Admission.objects.create(
        patient=patient,
        bed=bed,
        admitted_at=timezone.now() - dt.timedelta(hours=3),
        public_id=uuid.UUID(Example.ADMISSION),
    )
    device = Device.objects.create(
        serial="MX450-0042", bed=bed, public_id=uuid.UUID(Example.DEVICE)
    )
    rule = threshold_rule(ward, public_id=uuid.UUID(Example.RULE))
    alert_for(admission, rule, public_id=uuid.UUID(Example.ALERT))
    for minutes in range(1, 30):
        observation_for(patient, minutes_ago=minutes, device=device, value=60 + minutes)
        news2_for(patient, minutes_ago=minutes, total=minutes % 8)
    factories.bed(ward, label="4")
    factories.patient()
    factories.clinician(ward)
    threshold_rule(None, name="Spare", code="8867-4", high=150.0)


@pytest.fixture
def admin_token() -> str:
    _, plain = api_token_issue(
        user=factories.administrator(), name="schemathesis", scopes=["read", "acknowledge", "write"]
    )
    return plain


@pytest.fixture
def unthrottled() -> Iterator[None]:
    # DRF keeps the rates on the class (read once from settings).
    saved = PerCredentialThrottle.THROTTLE_RATES
    PerCredentialThrottle.THROTTLE_RATES = {
        **django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
        "credential": "100000/min",
    }
    try:
        yield
    finally:
        PerCredentialThrottle.THROTTLE_RATES = saved


def _run(strategy: Any, max_examples: int, headers: dict[str, str]) -> None:
    @settings(HYPOTHESIS, max_examples=max_examples)
    @given(case=strategy)
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


def test_it_never_fails_on_generated_input(admin_token: str, unthrottled: None) -> None:
    _example_hospital()
    schema = schemathesis.openapi.from_asgi("/api/schema/?format=json", application)
    headers = {"Authorization": f"Token {admin_token}"}
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.exclude(path=INGEST_PATH).get_all_operations():
        operation = result.ok()
        operations += 1
        examples = operation.get_strategies_from_examples()
        runs = [(strategies.one_of(examples), 2 * len(examples))] if examples else []
        runs += [
            (operation.as_strategy(generation_mode=mode), MAX_EXAMPLES) for mode in GenerationMode
        ]
        for strategy, max_examples in runs:
            try:
                _run(strategy, max_examples, headers)
            # Every operation is tried and every failure reported (schemathesis raises groups).
            except (Exception, BaseExceptionGroup) as error:
                failures.setdefault(operation.label, f"{type(error).__name__}: {error}")
    assert operations == 29
    assert failures == {}
