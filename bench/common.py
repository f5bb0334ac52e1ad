"""What every benchmark shares: the bench environment, percentiles, tables and result files.

Nothing here imports Django (nor does bench.processes), so the harness decides when Django's
settings are read: after it has set the bench environment.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python")
RESULTS_DIR = REPO / "bench" / "results"  # git-ignored
LOG_DIR = RESULTS_DIR / "logs"

DEFAULT_DATABASE_URL = "mysql://root@127.0.0.1:3306/portal_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})

# Variables a developer's shell may carry that would silently change what is measured; the
# bench sets each one itself (INGEST_* too: only --server-env and the scenarios set those).
_NOT_INHERITED = frozenset(
    {
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "DATABASE_CONN_MAX_AGE",
        "DJANGO_SETTINGS_MODULE",
        "PORTAL_MODE",
        "DEBUG",
        "LOG_LEVEL",
    }
)


class BenchError(Exception):
    """A problem the harness explains in one line before it stops everything it started."""


def say(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the result table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def results_report(stem: str, document: Any, text: str) -> None:
    """Write a run's document to ``bench/results/<stem>.json`` and print its table."""
    path = write_json(result_path(stem, ".json"), document)
    print(text, flush=True)
    say(f"results: {path}")
    say("stopping what the bench started")


def bench_main(
    parse_args: Callable[[Sequence[str] | None], Any],
    bench: Callable[[Any], int],
    argv: Sequence[str] | None,
) -> int:
    """A benchmark's command line: parse, run with its cleanups on Ctrl-C or ``kill``, and
    turn an interruption or a ``BenchError`` into a message and an exit status."""
    args = parse_args(argv)
    stop_on_signals()
    try:
        return bench(args)
    except KeyboardInterrupt:
        say("interrupted; everything the bench started has been stopped")
        return 130
    except BenchError as error:
        say(f"error: {error}")
        return 2


def utc_stamp(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def stop_on_signals() -> None:
    """Make Ctrl-C and ``kill <pid>`` stop the harness through its cleanups.

    SIGINT is set explicitly: a shell starting the harness in the background makes it ignored.
    """

    def handler(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)


def portal_env(
    *, database_url: str, redis_url: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of every portal process of a bench run (see config/settings.py)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _NOT_INHERITED and not name.startswith("INGEST_")
    }
    env.update(
        PORTAL_MODE="development",
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DEBUG="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def local_endpoint(url: str, default_port: int) -> tuple[str, int]:
    """(host, port) of ``url``, refusing anything but this machine: benches never leave it."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in LOCAL_HOSTS:
        raise BenchError(f"{url}: benchmarks only talk to 127.0.0.1, not {host}")
    return "127.0.0.1", parts.port or default_port


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None for no values)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the figures right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def result_path(stem: str, suffix: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / f"{stem}{suffix}"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
