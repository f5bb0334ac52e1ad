"""The processes a benchmark starts, targets and measures: MariaDB, Redis, daphne, Celery.

The harness stops only what it started (``Service``), by process id, never by name.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psutil

from bench.common import PYTHON, REPO, VENV_BIN, BenchError, local_endpoint, say


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


@dataclass
class Service:
    """A process the harness started, and the only kind it ever stops."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout:.0f} s; killing it")
            self.process.kill()
            self.process.wait(5)
        # Children of ours (a Celery pool) that outlived their parent.
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass

    def fail(self, what: str) -> NoReturn:
        raise BenchError(
            f"{self.name} {what}; its log ({self.log_path}):\n{log_tail(self.log_path)}"
        )


def spawn(name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> Service:
    """Start ``argv`` in its own session (Ctrl-C reaches only the harness, which stops it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - argv built by the harness, no shell
            list(argv),
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(name, process, log_path)


def wait_until(
    ready: Callable[[], bool], *, timeout: float, what: str, service: Service | None = None
) -> None:
    """Poll ``ready`` until it holds; bounded in time, and stops early if ``service`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if service is not None and not service.alive():
            service.fail(f"exited (status {service.process.returncode}) before {what}")
        time.sleep(0.2)
    if service is not None:
        service.fail(f"did not reach '{what}' within {timeout:.0f} s")
    raise BenchError(f"{what}: not reached within {timeout:.0f} s")


def mariadb_ensure(database_url: str, log_path: Path) -> Service | None:
    """Start MariaDB if nothing listens on the URL's port; None when it was already running."""
    host, port = local_endpoint(database_url, 3306)
    if port_open(host, port):
        return None
    binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    if not Path(binary).exists():
        raise BenchError(f"MariaDB is not running on port {port} and {binary} is not installed")
    run_dir = Path("/run/mysqld")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "mysql", "mysql")
    say(f"starting MariaDB on port {port}")
    service = spawn(
        "mariadbd", [binary, "--user=mysql", f"--port={port}"], env=os.environ, log_path=log_path
    )
    wait_until(
        lambda: port_open(host, port),
        timeout=60,
        what="MariaDB accepts connections",
        service=service,
    )
    return service


def redis_ensure(redis_url: str, log_path: Path) -> Service | None:
    """Start a throwaway Redis if nothing listens on the URL's port; None when already running."""
    host, port = local_endpoint(redis_url, 6379)
    if port_open(host, port):
        return None
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError(f"Redis is not running on port {port} and redis-server is not installed")
    say(f"starting Redis on port {port}")
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    service = spawn("redis-server", argv, env=os.environ, log_path=log_path)
    wait_until(
        lambda: port_open(host, port), timeout=30, what="Redis accepts connections", service=service
    )
    return service


def run_tool(argv: Sequence[str], *, env: Mapping[str, str], timeout: float) -> None:
    """Run a project script (``bin/ensure-database``, ``manage.py migrate``) to completion."""
    completed = subprocess.run(  # noqa: S603 - argv built by the harness, no shell
        [PYTHON, *argv], cwd=REPO, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if completed.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed:\n{completed.stdout}{completed.stderr}")


def http_status(port: int, path: str) -> int | None:
    """The status of ``GET path`` on 127.0.0.1:``port``, or None while nothing answers."""
    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        probe.request("GET", path)
        return probe.getresponse().status
    except OSError:
        return None
    finally:
        probe.close()


def daphne_start(
    *,
    env: Mapping[str, str],
    port: int,
    log_path: Path,
    probe_path: str,
    probe_status: int,
    backlog: int | None = None,
    application: str = "config.asgi:application",
    program: str = "daphne",
) -> Service:
    """Start daphne (or uvicorn, as compose's ``ingest`` runs it) serving ``application`` on
    127.0.0.1:``port``; ready once ``GET probe_path`` answers ``probe_status``.

    The probe also warms the path up (URL resolving, imports) before any measured request.
    ``backlog`` sets the listen backlog (Twisted's default is 50) through an endpoint string.
    """
    if program == "uvicorn":
        listen = ["--host=127.0.0.1", f"--port={port}", "--lifespan=off", "--no-access-log"]
        if backlog is not None:
            listen.append(f"--backlog={backlog}")
    elif backlog is None:
        listen = ["-b", "127.0.0.1", "-p", str(port)]
    else:
        listen = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"]
    argv = [str(VENV_BIN / program), *listen, application]
    service = spawn(program, argv, env=env, log_path=log_path)

    def ready() -> bool:
        status = http_status(port, probe_path)
        if status is not None and status != probe_status:
            service.fail(f"answers GET {probe_path} with {status}, not {probe_status}")
        return status is not None

    wait_until(ready, timeout=60, what="daphne answers HTTP", service=service)
    return service


def celery_start(
    *, env: Mapping[str, str], log_path: Path, concurrency: int | None = None
) -> Service:
    """Start a Celery worker (prefork, one child per core unless ``concurrency`` says how
    many) and wait until it answers a ping.

    Needs Django's settings loaded with ``env`` (the harness's own process), for the broker.
    """
    hostname = f"bench-{os.getpid()}@{socket.gethostname()}"
    argv = [str(VENV_BIN / "celery"), "-A", "config", "worker", "--loglevel", "WARNING"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    service = spawn("celery", [*argv, "-n", hostname], env=env, log_path=log_path)
    from config.celery import app

    wait_until(
        lambda: bool(app.control.ping(destination=[hostname], timeout=1.0)),
        timeout=90,
        what="the Celery worker answers a ping",
        service=service,
    )
    return service


def celery_queue_depth(redis_url: str) -> int:
    """Tasks waiting in the Redis broker's queues plus those taken but not yet acknowledged
    (the alert tasks are ``acks_late``, so a task being run still counts)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        waiting = sum(
            client.llen(key)
            for key in client.scan_iter(match="celery*", count=1000)
            if client.type(key) == b"list"
        )
        return int(waiting) + int(client.hlen("unacked"))
    finally:
        client.close()


def celery_drain(redis_url: str, *, timeout: float) -> float | None:
    """Wait until the broker holds no task; seconds it took, None if ``timeout`` ran out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if celery_queue_depth(redis_url) == 0:
            return time.monotonic() - started
        time.sleep(0.25)
    return None


def listening_process(port: int) -> psutil.Process | None:
    """The process listening on 127.0.0.1:``port`` (MariaDB, Redis, a daphne given by --url)."""
    for conn in psutil.net_connections(kind="tcp"):
        if (
            conn.status == psutil.CONN_LISTEN
            and conn.laddr
            and conn.laddr.port == port
            and conn.pid
        ):
            try:
                return psutil.Process(conn.pid)
            except psutil.Error:
                return None
    return None


@dataclass
class CpuMeter:
    """CPU seconds (user + system) a process and its descendants spent between start and stop.

    Descendants are read at both ends, so a Celery pool child counts whether it was there from
    the start or forked later; a process that exits in between loses its last slice.
    """

    label: str
    root: psutil.Process | None
    _start: dict[int, float] = field(default_factory=dict)

    def _now(self) -> dict[int, float]:
        if self.root is None:
            return {}
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return {}
        seconds: dict[int, float] = {}
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seconds[process.pid] = times.user + times.system
        return seconds

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> float | None:
        if self.root is None:
            return None
        end = self._now()
        return sum(value - self._start.get(pid, 0.0) for pid, value in end.items())


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (every process, ours or not)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)
