"""Channel-layer sends from synchronous code in a process without a server loop (Celery's).

Each case runs in a fresh interpreter against the real Redis, as a worker process would.
"""

from __future__ import annotations

import json

from tests.processes import child_process_environment, python_code_run

SENDS = 20

_CODE = """
import json, os, django
django.setup()
import redis
from django.conf import settings
from monitoring.events import sends_loop_enable, ward_event_send_sync

ENABLE = {enable}
client = redis.Redis.from_url(settings.REDIS_URL)
def connections():
    return client.info("stats")["total_connections_received"]
def descriptors():
    return len(os.listdir("/proc/self/fd"))

if ENABLE:
    sends_loop_enable()
ward = "sends-loop-" + str(os.getpid())
first = ward_event_send_sync(ward, {{"type": "probe"}})
before, open_before = connections(), descriptors()
seqs = [ward_event_send_sync(ward, {{"type": "probe"}}) for _ in range({sends})]
opened, kept_open = connections() - before, descriptors() - open_before
child = os.fork()
if child == 0:
    os._exit(0 if ward_event_send_sync(ward, {{"type": "probe"}}) is not None else 3)
_, status = os.waitpid(child, 0)
print(json.dumps({{"first": first, "seqs": seqs, "opened": opened, "kept_open": kept_open,
                   "child": os.waitstatus_to_exitcode(status)}}))
"""


def _run(*, enable: bool) -> dict:
    result = python_code_run(
        _CODE.format(enable=enable, sends=SENDS), environment=child_process_environment()
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_worker_process_sends_on_one_loop_and_keeps_its_redis_connections() -> None:
    outcome = _run(enable=True)

    # Every event was numbered on the ward's log and handed to its group, in order.
    assert outcome["first"] == 1
    assert outcome["seqs"] == list(range(2, SENDS + 2))
    # The connections of the first send are reused: twenty more sends open none (a margin of
    # two for anything else touching this Redis meanwhile).
    assert outcome["opened"] <= 2
    assert outcome["kept_open"] <= 2
    # A forked child (Celery's pool) starts its own loop rather than waiting on the parent's,
    # which has no thread in the child.
    assert outcome["child"] == 0


def test_without_the_sends_loop_every_send_opens_new_connections() -> None:
    """Why the sends loop exists, measured the same way: a loop per send means new Redis
    connections per send, and the ward log's client of each dead loop keeps its socket open
    (a worker leaked a descriptor per alert event until it ran out)."""
    outcome = _run(enable=False)

    assert outcome["seqs"] == list(range(2, SENDS + 2))
    assert outcome["opened"] >= SENDS
    assert outcome["kept_open"] >= SENDS
    assert outcome["child"] == 0
