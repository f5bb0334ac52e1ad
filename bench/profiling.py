"""py-spy on a server process during a run, and a text summary of where its time goes.

Samples are taken with ``--gil``: only the thread holding the GIL is recorded. A daphne process
runs its Python on one core at a time, so the GIL's busy share is how close the process is to
its ceiling, and the stacks are what fills it. (Without ``--gil``, py-spy counted threads
blocked in ``SimpleQueue.get`` as active on this machine, which drowned everything else.)
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO, VENV_BIN, result_path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Frames on every stack (thread start-up, the event loop, daphne's CLI): they say nothing.
_PLUMBING = re.compile(
    r"^(Thread\._bootstrap(_inner)?|Thread\.run|<module>|CommandLineInterface\.\w+|Server\.run|"
    r"AsyncioSelectorReactor\.run|BaseEventLoop\.(run_forever|_run_once)|Handle\._run) "
)


def _thread_group(thread: str) -> str:
    """Threads by role: "thread (1234): ingest-writer_2" → "ingest-writer"; asgiref's
    per-request executors "ThreadPoolExecutor-41_0" → "ThreadPoolExecutor"; their shutdown
    joiners "Thread-836 (join)" → "Thread (join)"; unnamed threads → "thread (unnamed)"."""
    name = thread.partition(": ")[2]
    if not name:
        return "thread (unnamed)"
    return re.sub(r"[-_]\d+(_\d+)?", "", name)


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", f"{REPO}/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def profile_summary(raw: Path, *, rate: int, seconds: float, top: int = 25) -> str:
    """Where the GIL's time goes, from py-spy's collapsed stacks (``--gil --threads``)."""
    per_thread: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        group = _thread_group(thread)
        names = [_frame_name(frame) for frame in frames]
        total += count
        per_thread[group] += count
        if names:
            own[f"{names[-1]} [{group}]"] += count
        for name in set(names):
            if not _PLUMBING.match(name):
                inclusive[name] += count
    if not total:
        return "py-spy recorded no samples."
    possible = rate * seconds
    lines = [
        f"GIL held in {100 * total / possible:.0f}% of {possible:.0f} samples "
        f"({seconds:.0f} s at {rate} Hz); 100% means the process is at its one-core ceiling.",
        "",
        "GIL time by thread role (share of the run):",
    ]
    lines += [f"  {100 * n / possible:6.1f}%  {group}" for group, n in per_thread.most_common(10)]
    lines += ["", f"Top {top} by own time (share of GIL samples):"]
    lines += [f"  {100 * n / total:6.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", f"Top {top} by inclusive time (share of GIL samples):"]
    lines += [f"  {100 * n / total:6.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


class Profiler:
    """py-spy on a process during one run: the first half as an SVG flame graph, the second
    as per-thread collapsed stacks, summarised in text. Two halves, because two py-spy
    processes cannot both stop the same process with ptrace at once."""

    RATE = 100

    def __init__(self, *, pid: int, stem: str, seconds: float) -> None:
        self.pid = pid
        self.half = max(1, int(seconds // 2))
        self.svg = result_path(stem, ".svg")
        self.raw = result_path(stem, "-stacks.txt")
        self.summary = result_path(stem, "-profile.txt")
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._record, name="py-spy", daemon=True)

    def start(self) -> Profiler:
        self._thread.start()
        return self

    def _record(self) -> None:
        common = [str(VENV_BIN / "py-spy"), "record", "--pid", str(self.pid)]
        common += ["--duration", str(self.half), "--rate", str(self.RATE), "--gil"]
        for extra in (["-o", str(self.svg)], ["--format", "raw", "--threads", "-o", str(self.raw)]):
            try:
                completed = subprocess.run(  # noqa: S603 - argv built here, no shell
                    [*common, *extra], capture_output=True, text=True, timeout=self.half + 30
                )
            except subprocess.TimeoutExpired:
                self.errors.append("py-spy did not finish in time")
                continue
            if completed.returncode != 0:
                self.errors.append(completed.stderr.strip()[-500:])

    def finish(self) -> dict[str, Any]:
        self._thread.join(timeout=self.half * 2 + 90)
        result: dict[str, Any] = {"pid": self.pid, "errors": self.errors}
        if self.svg.exists():
            result["flamegraph"] = str(self.svg)
        if self.raw.exists():
            text = profile_summary(self.raw, rate=self.RATE, seconds=self.half)
            self.summary.write_text(text + "\n", encoding="utf-8")
            result.update(stacks=str(self.raw), summary=str(self.summary), text=text)
        return result
