"""Hooks that let higher apps react to stored readings without monitoring importing them.

``observations_recorded`` is sent after the message's transaction has committed, from the
ingestion process's event loop, with ``recorded`` (a ``monitoring.services.RecordedMessage``).
Receivers must not block: they queue work (a Celery request, a push) and return. The alerts
app connects its evaluation request here.
"""

from __future__ import annotations

from django.dispatch import Signal

observations_recorded = Signal()
