"""The read-replica router, with a second alias on the same MariaDB server."""

from __future__ import annotations

import pytest
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from config.routers import reads_from_replica
from patients.models import Patient, Ward
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


def test_it_sends_opted_in_reads_to_the_replica_and_everything_else_to_the_primary() -> None:
    patient = factories.patient()
    with override_settings(READ_REPLICA_ALIAS="replica"):
        with CaptureQueriesContext(connections["replica"]) as on_replica, reads_from_replica():
            assert Patient.objects.get(pk=patient.pk).mrn == patient.mrn
        assert len(on_replica) == 1
        with CaptureQueriesContext(connections["replica"]) as outside:
            Patient.objects.get(pk=patient.pk)
        assert len(outside) == 0  # reads that did not opt in stay on the primary
        with CaptureQueriesContext(connections["replica"]) as writes, reads_from_replica():
            Ward.objects.create(code="replica-test", name="Written to the primary")
        # The change history may look things up (reads), but no write reaches the replica.
        assert not [q for q in writes if not q["sql"].lstrip().upper().startswith("SELECT")]
    assert Ward.objects.using("default").filter(code="replica-test").exists()


def test_it_reads_from_the_primary_when_no_replica_is_configured() -> None:
    patient = factories.patient()
    with CaptureQueriesContext(connections["replica"]) as on_replica, reads_from_replica():
        Patient.objects.get(pk=patient.pk)
    assert len(on_replica) == 0
