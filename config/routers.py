"""Sending API reads to a MariaDB replica, when one is configured (DATABASE_REPLICA_URL).

Only reads that opted in (``reads_from_replica``: the records API's GET requests and FHIR)
go to the replica: ingestion, alert evaluation and every write stay on the primary, which
they must, since a replica lags.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings

_replica_reads: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "replica_reads", default=False
)


@contextmanager
def reads_from_replica() -> Iterator[None]:
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


class ReplicaRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        alias = getattr(settings, "READ_REPLICA_ALIAS", None)
        if alias and _replica_reads.get():
            return alias
        return None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # the replica holds the same data

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == "default"
