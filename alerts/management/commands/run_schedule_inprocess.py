"""Run Celery beat's schedule in this process, for the embedded demo that has no broker.

With a broker, `celery beat` and a worker do this; without one (the embedded setup of
bin/demo) this command calls the same scheduled tasks locally at the same intervals.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.celery import app


class Command(BaseCommand):
    help = "Run CELERY_BEAT_SCHEDULE's tasks in-process (embedded demo only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--duration", type=float, default=None, help="Stop after N seconds.")

    def handle(self, *args: Any, duration: float | None, **options: Any) -> None:
        if settings.PORTAL_MODE == "production":
            raise CommandError("In production, run `celery beat` and a worker instead.")
        app.loader.import_default_modules()
        schedule = {
            name: (app.tasks[entry["task"]], float(entry["schedule"]))
            for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
        }
        due = dict.fromkeys(schedule, time.monotonic())
        stop = time.monotonic() + duration if duration else None
        while stop is None or time.monotonic() < stop:
            now = time.monotonic()
            for name, (task, interval) in schedule.items():
                if now >= due[name]:
                    task.apply()
                    due[name] = now + interval
            time.sleep(max(0.05, min(due.values()) - time.monotonic()))
