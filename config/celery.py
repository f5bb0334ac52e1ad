"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.worker_process_init.connect
def _worker_process_setup(**kwargs: Any) -> None:
    """What a worker process, and each process of its pool, sets up:
    - the collector's pace of the server processes (config/collector.py);
    - one long-lived loop for its alert events and their Redis connections, instead of a new
      loop and new connections per event (monitoring/events.py); each process of the pool
      starts its own at its first send."""
    from django.conf import settings

    from config.collector import collector_tune
    from monitoring.events import sends_loop_enable

    global _in_worker
    _in_worker = True
    collector_tune(settings.GC_THRESHOLDS)
    sends_loop_enable()


_in_worker = False


@signals.task_postrun.connect
def _full_collection_if_due(**kwargs: Any) -> None:
    """The clock of full collections (config/collector.py), between tasks, in the process
    that ran them; not in tasks run eagerly inside a web process (the embedded demo), whose
    own clock runs on its event loop."""
    from django.conf import settings

    from config.collector import full_collection_if_due

    if _in_worker and settings.GC_FULL_COLLECTION_SECONDS is not None:
        full_collection_if_due(settings.GC_FULL_COLLECTION_SECONDS)


@signals.task_failure.connect
def _count_task_failure(sender: Any = None, **kwargs: Any) -> None:
    """Count failures where the web process's /metrics can read them (workers are separate
    processes with no scrape endpoint of their own)."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    import redis

    from config.metrics import task_failures_key

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1).hincrby(
            task_failures_key(), getattr(sender, "name", "unknown"), 1
        )
    except redis.RedisError:
        logger.warning("could not count a task failure in Redis", exc_info=True)
