"""Celery entry points of the alert engine. Each loads by id and calls one service."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from alerts.engine import devices_offline_check, messages_evaluate, messages_pending
from alerts.services import alerts_escalate

logger = logging.getLogger(__name__)

# A message the normal path has not evaluated after this long is the catch-up's to evaluate.
CATCH_UP_GRACE = dt.timedelta(seconds=10)
CATCH_UP_BATCH = 200
CATCH_UP_MAX_BATCHES = 25


def _moment(now: str | None) -> dt.datetime:
    # ``now`` (ISO 8601) lets a replay or a test run a task at a chosen time; normally unset.
    return dt.datetime.fromisoformat(now) if now else timezone.now()


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    # A database hiccup: try again soon rather than leave the readings to the catch-up.
    autoretry_for=(OperationalError,),
    retry_backoff=1,
    retry_backoff_max=10,
    max_retries=5,
)
def evaluate_messages(message_pks: list[int], now: str | None = None) -> int:
    """Evaluate the readings of these device messages.

    Idempotent: only messages not yet evaluated are claimed, so a redelivered or duplicated
    task changes nothing more.
    """
    return messages_evaluate(message_pks=message_pks, now=_moment(now))


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=120, soft_time_limit=110)
def evaluation_catch_up(now: str | None = None) -> int:
    """Evaluate device messages the normal path never evaluated (broker was down), oldest
    first. Idempotent, like evaluate_messages."""
    evaluated = 0
    moment = _moment(now)
    older_than = moment - CATCH_UP_GRACE
    for _ in range(CATCH_UP_MAX_BATCHES):
        pending = messages_pending(older_than=older_than, limit=CATCH_UP_BATCH)
        if not pending:
            break
        evaluated += messages_evaluate(message_pks=pending, now=moment)
    if evaluated:
        logger.warning("catch-up evaluated %d device messages left unevaluated", evaluated)
    return evaluated


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=30, soft_time_limit=25)
def alerts_tick(now: str | None = None) -> None:
    """Technical alarms (device offline / back) and escalation. Idempotent: every change is a
    compare-and-set against the current state."""
    moment = _moment(now)
    devices_offline_check(now=moment)
    alerts_escalate(now=moment)
