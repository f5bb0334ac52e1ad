"""Channel-layer sends from synchronous code in a Celery worker process.

Each case runs in a fresh interpreter against the real Redis, set up as a pool process is (Celery's
``worker_process_init`` signal), and sends through ``ward_event_send_sync`` as an alert event does.
"""

from __future__ import annotations

import json

from tests.processes import child_process_environment, python_code_run

SENDS = 20

_WORKER = """
import json, os, time, django
django.setup()
import psutil
from celery import signals
from django.conf import settings
import config.celery
from monitoring import events
from monitoring.events import ward_event_send_sync
from monitoring.metrics import LIVE_PUSH_FAILURES

signals.worker_process_init.send(sender=None)
REDIS_PORT = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
def redis_sockets():
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == REDIS_PORT}
def descriptors():
    return len(os.listdir("/proc/self/fd"))
def failures():
    return LIVE_PUSH_FAILURES._value.get()
ward = "sends-loop-" + str(os.getpid())
"""

_REUSE = (
    _WORKER
    + """
first = ward_event_send_sync(ward, {"type": "probe"})
sockets, open_before = redis_sockets(), descriptors()
seqs = [ward_event_send_sync(ward, {"type": "probe"}) for _ in range(SENDS)]
child = os.fork()
if child == 0:
    os._exit(0 if ward_event_send_sync(ward, {"type": "probe"}) is not None else 3)
_, status = os.waitpid(child, 0)
print(json.dumps({"first": first, "seqs": seqs, "sockets_before": sorted(sockets),
                  "sockets_after": sorted(redis_sockets()),
                  "kept_open": descriptors() - open_before,
                  "child": os.waitstatus_to_exitcode(status)}))
"""
)

_STUCK = (
    _WORKER
    + """
import redis
from monitoring.wardlog import _keys
assert ward_event_send_sync(ward, {"type": "probe", "n": 1}) == 1
before = failures()
# The sends loop is busy for longer than a send may wait (a stand-in for a loop that cannot
# run the send: its thread starved or stuck).
events._sends_loop().call_soon_threadsafe(time.sleep, events.SEND_TIMEOUT_SECONDS * 3)
started = time.monotonic()
given_up = ward_event_send_sync(ward, {"type": "probe", "n": 2})
waited = time.monotonic() - started
counted = failures() - before
after = ward_event_send_sync(ward, {"type": "probe", "n": 3})
logged = [json.loads(text) for text in
          redis.Redis.from_url(settings.REDIS_URL).lrange(_keys(ward)[1], 0, -1)]
print(json.dumps({"given_up": given_up, "waited": waited, "counted": counted,
                  "limit": events.SEND_TIMEOUT_SECONDS * 2, "after": after,
                  "logged": [(event["seq"], event["n"]) for event in logged]}))
"""
)


def _run(code: str) -> dict:
    result = python_code_run(f"SENDS = {SENDS}\n{code}", environment=child_process_environment())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_worker_sends_on_one_loop_over_the_same_redis_connections() -> None:
    outcome = _run(_REUSE)

    # Every event was numbered on the ward's log and handed to its group, in order.
    assert outcome["first"] == 1
    assert outcome["seqs"] == list(range(2, SENDS + 2))
    # The first send's connections carry the next twenty: no socket opened, none kept. (A
    # loop per send opened new ones each time and kept the ward log's: a descriptor leaked
    # per alert event.)
    assert outcome["sockets_before"]
    assert outcome["sockets_after"] == outcome["sockets_before"]
    assert outcome["kept_open"] <= 1
    # A forked child (Celery's pool) starts its own loop rather than waiting on the parent's,
    # which has no thread in the child.
    assert outcome["child"] == 0


def test_a_send_the_loop_cannot_run_is_given_up_and_counted_and_the_next_one_goes() -> None:
    outcome = _run(_STUCK)

    assert outcome["given_up"] is None
    assert outcome["limit"] <= outcome["waited"] < outcome["limit"] + 2
    assert outcome["counted"] == 1
    # The next event goes, and the ward's log keeps the order events were produced in: the
    # abandoned one was cancelled, having been numbered (seq 2) or not, never after event 3.
    # (Numbered and not sent, it reaches dashboards as a gap they replay.)
    assert outcome["after"] == outcome["logged"][-1][0]
    assert [n for _, n in outcome["logged"]] in ([1, 2, 3], [1, 3])
    assert [seq for seq, _ in outcome["logged"]] == list(range(1, len(outcome["logged"]) + 1))


_NO_LOOP_OF_ITS_OWN = """
import asyncio, json, os, threading, django
django.setup()
from monitoring import events
from monitoring.events import ward_event_send, ward_event_send_sync

ward = "no-loop-" + str(os.getpid())
# A script's sends, from two threads at once, each on a loop made for that one call.
seqs = []
threads = [threading.Thread(target=lambda: seqs.append(ward_event_send_sync(ward, {"n": n})))
           for n in range(2)]
for thread in threads: thread.start()
for thread in threads: thread.join()
seqs.append(ward_event_send_sync(ward, {"n": 2}))  # and one from this thread
home_after_calls = events._home_loop
# Later this thread runs a loop of its own (a server, a test): that loop is the home one.
async def native():
    await ward_event_send(ward, {"n": 3})
    return events._home_loop is asyncio.get_running_loop()
print(json.dumps({"seqs": sorted(seqs), "no_home": home_after_calls is None,
                  "native_home": asyncio.run(native())}))
"""


def test_a_loop_made_for_one_call_never_becomes_the_home_loop() -> None:
    # Such a loop closes when its call returns: a send another thread handed to it was
    # cancelled, and the CancelledError escaped an evaluation's on-commit callbacks.
    outcome = _run(_NO_LOOP_OF_ITS_OWN)

    assert outcome["seqs"] == [1, 2, 3]
    assert outcome["no_home"] is True
    # And the marker does not outlive the call in the caller's context.
    assert outcome["native_home"] is True
