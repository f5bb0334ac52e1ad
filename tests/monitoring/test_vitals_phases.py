"""The vitals push's per-ward phases, through the real Redis channel layer.

Each ward's frame leaves in its own slot of the interval, so the dashboards' daphne gets one
ward's frames at a time (monitoring/events.py). Only lower bounds on time are asserted: a
frame never leaves before its slot; a loaded machine may send it later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from channels.layers import get_channel_layer

from monitoring.events import WardVitalsCoalescer, epoch_ms, ward_event_decode, ward_group_name
from monitoring.ingestion import Reading
from monitoring.services import RecordedMessage

pytestmark = pytest.mark.asyncio

INTERVAL = 0.4
SLOT = INTERVAL / WardVitalsCoalescer.PHASES
# A timer may fire this much before its time (the loop's clock resolution, and rounding).
EARLY = 0.002


def _recorded(ward: str, bed: str, patient: str, value: float, at: dt.datetime) -> RecordedMessage:
    reading = Reading(code="8867-4", value=value, unit="/min", observed_at=at, artifact=False)
    return RecordedMessage(
        message_pk=1,
        device_pk=1,
        ward_code=ward,
        bed_public_id=bed,
        latest={patient: {"8867-4": reading}, None: {"8867-4": reading}},
    )


async def test_each_ward_gets_one_frame_in_its_own_slot_of_the_interval() -> None:
    layer = get_channel_layer()
    run = uuid.uuid4().hex[:8]
    wards = [f"phase-{run}-{i}" for i in range(10)]  # more wards than slots: two share one
    channels = {ward: await layer.new_channel() for ward in wards}
    for ward, channel in channels.items():
        await layer.group_add(ward_group_name(ward), channel)
    coalescer = WardVitalsCoalescer(interval=INTERVAL)
    loop = asyncio.get_running_loop()
    try:
        at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        added = loop.time()
        for value, ward in enumerate(wards):
            coalescer.add(_recorded(ward, f"bed-{ward}", f"patient-{ward}", 60 + value, at))
            # A later reading of the same ward before its slot joins the same frame.
            coalescer.add(_recorded(ward, f"bed-{ward}", f"patient-{ward}", 70 + value, at))
        slots = dict(coalescer._due)

        # The wards seen take the slots 0, 4, 2, 6, 1, 5, 3, 7 (then 0, 4 again), each within
        # one interval of the readings.
        phases = [round((slots[ward] % INTERVAL) / SLOT) % 8 for ward in wards]
        assert phases == [0, 4, 2, 6, 1, 5, 3, 7, 0, 4]
        assert all(added - EARLY <= slots[ward] < added + INTERVAL for ward in wards)

        received = {}
        for value, ward in enumerate(wards):
            message = await asyncio.wait_for(layer.receive(channels[ward]), 5)
            received[ward] = loop.time()
            event = ward_event_decode(message)
            assert event["type"] == "vitals" and event["ward"] == ward
            [entry] = event["beds"]  # the bed's patient; nothing for the bed without one
            assert entry == {
                "bed": f"bed-{ward}",
                "patient": f"patient-{ward}",
                "vitals": {"8867-4": [70 + value, epoch_ms(at)]},
            }
        assert all(received[ward] >= slots[ward] - EARLY for ward in wards)

        # Nothing more: one frame per ward for what came in one interval.
        for channel in channels.values():
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(layer.receive(channel), INTERVAL)
    finally:
        for ward, channel in channels.items():
            await layer.group_discard(ward_group_name(ward), channel)


async def test_a_ward_keeps_its_slot_and_sends_at_most_one_frame_an_interval() -> None:
    layer = get_channel_layer()
    ward, other = f"phase-{uuid.uuid4().hex[:8]}", f"phase-{uuid.uuid4().hex[:8]}"
    channel = await layer.new_channel()
    await layer.group_add(ward_group_name(ward), channel)
    coalescer = WardVitalsCoalescer(interval=INTERVAL)
    loop = asyncio.get_running_loop()
    try:
        coalescer.add(_recorded(other, "bed-o", "patient-o", 50, dt.datetime.now(dt.UTC)))
        sent_at, slots = [], []
        for value in range(3):
            coalescer.add(_recorded(ward, "bed-w", "patient-w", 60 + value, dt.datetime.now(dt.UTC)))
            slots.append(coalescer._due[ward])
            message = await asyncio.wait_for(layer.receive(channel), 5)
            sent_at.append(loop.time())
            [entry] = ward_event_decode(message)["beds"]
            assert entry["vitals"]["8867-4"][0] == 60 + value
        # The second ward seen has the slot half an interval in, every interval.
        for slot in slots:
            assert round((slot % INTERVAL) / SLOT) % 8 == 4
        # A reading added after its ward's frame left waits for a later slot of the same phase
        # (the next, unless the frame reached us more than an interval late).
        for earlier, later in zip(slots, slots[1:], strict=False):
            intervals = (later - earlier) / INTERVAL
            assert intervals >= 1 - 1e-6 and intervals == pytest.approx(round(intervals), abs=1e-6)
        assert all(at >= slot - EARLY for at, slot in zip(sent_at, slots, strict=True))
    finally:
        await layer.group_discard(ward_group_name(ward), channel)
