"""The server processes run the collector at the settings' pace (config/collector.py): the
thresholds in fresh interpreters that load the ASGI application as daphne and uvicorn do, or
initialise a Celery worker as ``celery worker`` does; the clock of full collections in a real
daphne and a real uvicorn (read off their /metrics) and between a pool process's tasks."""

from __future__ import annotations

import os
import re
import subprocess
import time

import httpx
import pytest

from tests.config.test_settings_safety import SAFE
from tests.processes import asgi_serving, child_process_environment, python_code_run

ASGI = "import gc, config.asgi; print(*gc.get_threshold())"
CELERY = (
    "import gc, django; django.setup(); from celery import signals; "
    "from config.celery import app; print(*gc.get_threshold()); "
    "signals.worker_init.send(sender=None); print(*gc.get_threshold())"
)
# A cycle in the oldest generation, which only a full collection frees (the thresholds keep
# CPython's own full collections away), and the tasks of a pool process around it.
CELERY_CLOCK = """
import gc, threading, time, weakref, django
django.setup()
from celery import signals
from config.celery import app

class Node:
    pass

freed = threading.Event()
node = Node()
node.self = node
weakref.finalize(node, freed.set)
gc.collect()  # the node is alive: it moves to the oldest generation
del node  # now a cycle there that nothing else reaches
signals.task_postrun.send(sender=None)
time.sleep(1.2)
signals.task_postrun.send(sender=None)
print("eager", freed.is_set())  # not a worker: tasks run eagerly in a web process
signals.worker_process_init.send(sender=None)
signals.task_postrun.send(sender=None)  # the clock starts
print("started", freed.is_set())
time.sleep(1.2)
signals.task_postrun.send(sender=None)  # and is due
print("due", freed.is_set())
"""
CLOCK_ENVIRONMENT = {"GC_THRESHOLDS": "1000000,100,100", "GC_FULL_COLLECTION_SECONDS": "1"}


def _run(code: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in SAFE and k not in {"GC_THRESHOLDS", "GC_FULL_COLLECTION_SECONDS"}
    }
    environment |= SAFE | overrides | {"DJANGO_SETTINGS_MODULE": "config.settings"}
    return python_code_run(code, environment=environment)


def _cpythons_thresholds() -> list[str]:
    # An empty environment: nothing of this project's, nor a PYTHON* variable, is loaded.
    result = python_code_run("import gc; print(*gc.get_threshold())", environment={})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


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
    assert result.stdout.split() == _cpythons_thresholds()


def test_it_sets_them_when_a_celery_worker_starts() -> None:
    result = _run(CELERY, GC_THRESHOLDS="3000,11,9")
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before.split() == _cpythons_thresholds()  # importing the app alone changes nothing
    assert after.split() == ["3000", "11", "9"]


@pytest.mark.parametrize(
    "value", ["0,10,10", "50000,20", "many,10,10", "-1,2,3", "", "50000,20,99999999999"]
)
def test_it_refuses_a_value_that_would_stop_or_confuse_the_collector(value: str) -> None:
    result = _run(ASGI, GC_THRESHOLDS=value)
    assert result.returncode != 0
    assert "GC_THRESHOLDS must be three integers" in result.stderr


@pytest.mark.parametrize("seconds", ["0", "-5", "7200"])
def test_it_refuses_a_clock_out_of_bounds(seconds: str) -> None:
    result = _run(ASGI, GC_FULL_COLLECTION_SECONDS=seconds)
    assert result.returncode != 0
    assert "GC_FULL_COLLECTION_SECONDS must be between 1 and 3600" in result.stderr


def test_it_runs_full_collections_between_a_pool_processs_tasks() -> None:
    result = _run(CELERY_CLOCK, **CLOCK_ENVIRONMENT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["eager False", "started False", "due True"]


def _full_collections(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200, metrics.text
    match = re.search(r'^python_gc_collections_total\{generation="2"\} (\S+)$', metrics.text, re.M)
    assert match is not None, "no collection counts in /metrics"
    return int(float(match.group(1)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("server", "application"),
    [("daphne", "config.asgi:application"), ("uvicorn", "config.asgi:ingest_application")],
)
def test_it_runs_full_collections_on_the_servers_clock(server: str, application: str) -> None:
    """With thresholds that keep CPython's own full collections away, the count of full
    collections grows with the clock (1 s here) once the server has had a request."""
    with asgi_serving(
        application,
        ready_path="/healthz",
        environment=child_process_environment(CELERY_BROKER_URL="", **CLOCK_ENVIRONMENT),
        server_program=server,
    ) as url:
        first = _full_collections(url)
        deadline = time.monotonic() + 20
        while _full_collections(url) < first + 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _full_collections(url) >= first + 2
