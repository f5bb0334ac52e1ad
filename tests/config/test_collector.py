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
# Cyclic garbage that only a full collection frees (the automatic ones are kept far away by
# the thresholds), then a forked child like a prefork pool process.
CLOCK = """
import gc, os, threading, time, weakref
import config.asgi

class Node:
    pass

def clock_running():
    return any(t.name == "gc-full-collections" for t in threading.enumerate())

freed = threading.Event()
node = Node()
node.self = node
weakref.finalize(node, freed.set)
gc.collect()  # what is left of the start-up, so the cycle is on its own
node = Node()
node.self = node
weakref.finalize(node, freed.set)
del node
print("running", clock_running())
print("freed", freed.wait(10))
"""
CELERY_CHILD = """
import os, threading, django
django.setup()
from celery import signals
from config.celery import app

def clock_running():
    return any(t.name == "gc-full-collections" for t in threading.enumerate())

signals.worker_init.send(sender=None)
print("worker", clock_running(), flush=True)
pid = os.fork()
if pid == 0:
    before = clock_running()
    signals.worker_process_init.send(sender=None)
    print("child", before, clock_running(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def _run(code: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in SAFE and k not in {"GC_THRESHOLDS", "GC_FULL_COLLECTION_SECONDS"}
    }
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


def test_it_frees_cycles_of_the_old_generation_on_its_clock() -> None:
    result = _run(CLOCK, GC_THRESHOLDS="1000000,100,100", GC_FULL_COLLECTION_SECONDS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["running", "True", "freed", "True"]


def test_it_runs_no_clock_with_cpythons_thresholds() -> None:
    result = _run(
        "import threading, config.asgi; "
        "print(any(t.name == 'gc-full-collections' for t in threading.enumerate()))",
        GC_THRESHOLDS="default",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]


def test_it_starts_the_clock_again_in_each_process_of_a_celery_pool() -> None:
    result = _run(CELERY_CHILD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["worker True", "child False True"]


@pytest.mark.parametrize("seconds", ["0", "-5", "7200"])
def test_it_refuses_a_clock_out_of_bounds(seconds: str) -> None:
    result = _run(ASGI, GC_FULL_COLLECTION_SECONDS=seconds)
    assert result.returncode != 0
    assert "GC_FULL_COLLECTION_SECONDS must be between 1 and 3600" in result.stderr


@pytest.mark.parametrize("value", ["0,10,10", "50000,20", "many,10,10", "-1,2,3", ""])
def test_it_refuses_a_value_that_would_stop_or_confuse_the_collector(value: str) -> None:
    result = _run(ASGI, GC_THRESHOLDS=value)
    assert result.returncode != 0
    assert "GC_THRESHOLDS must be three positive integers" in result.stderr
