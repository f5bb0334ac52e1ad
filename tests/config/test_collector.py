"""The server processes run with the collector's thresholds from the settings
(config/collector.py): checked in fresh interpreters that load the ASGI application as daphne
and uvicorn do, and start a Celery worker's initialisation as ``celery worker`` does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.config.test_settings_safety import ROOT, SAFE

ASGI = "import gc, config.asgi; print(*gc.get_threshold())"
CELERY = (
    "import gc, django; django.setup(); from celery import signals; "
    "from config.celery import app; print(*gc.get_threshold()); "
    "signals.worker_init.send(sender=None); print(*gc.get_threshold())"
)


def _run(code: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in SAFE and k != "GC_THRESHOLDS"}
    environment |= SAFE | overrides | {"DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_it_sets_the_default_thresholds_in_the_asgi_servers() -> None:
    result = _run(ASGI)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["50000", "20", "10"]


def test_it_takes_the_thresholds_from_the_environment() -> None:
    result = _run(ASGI, GC_THRESHOLDS="2000,15,12")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2000", "15", "12"]


def test_it_keeps_cpythons_own_when_told_default() -> None:
    result = _run(ASGI, GC_THRESHOLDS="default")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["700", "10", "10"]  # CPython 3.11's


def test_it_sets_them_when_a_celery_worker_starts() -> None:
    result = _run(CELERY, GC_THRESHOLDS="3000,11,9")
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before.split() == ["700", "10", "10"]  # importing the app alone changes nothing
    assert after.split() == ["3000", "11", "9"]


@pytest.mark.parametrize("value", ["0,10,10", "50000,20", "many,10,10", "-1,2,3", ""])
def test_it_refuses_a_value_that_would_stop_or_confuse_the_collector(value: str) -> None:
    result = _run(ASGI, GC_THRESHOLDS=value)
    assert result.returncode != 0
    assert "GC_THRESHOLDS must be three positive integers" in result.stderr
