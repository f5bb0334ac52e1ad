"""The vitals push's per-ward slots, through the real Redis channel layer.

Each ward's frame leaves in its own slot of the interval, so the dashboards' daphne gets one
ward's frames at a time (monitoring/events.py). Time is asserted from below only (a frame
never leaves before its slot), or as an order between slots far apart: a loaded machine may
send any frame later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from channels.layers import get_channel_layer

from monitoring.events import WardVitalsCoalescer, epoch_ms, ward_event_decode, ward_group_name
from monitoring.ingestion import Reading
from monitoring.services import RecordedMessage

pytestmark = pytest.mark.asyncio

INTERVAL = 0.4
PHASES = WardVitalsCoalescer.PHASES
# A timer may fire this much before its time (the loop's clock resolution, and rounding).
EARLY = 0.002


def _recorded(ward: str, value: float, at: dt.datetime | None = None) -> RecordedMessage:
    at = at or dt.datetime.now(dt.UTC)
    reading = Reading(code="8867-4", value=value, unit="/min", observed_at=at, artifact=False)
    return RecordedMessage(
        message_pk=1,
        device_pk=1,
        ward_code=ward,
        bed_public_id=f"bed-{ward}",
        # The bed's admitted patient, and readings of no patient, which show nowhere.
        latest={f"patient-{ward}": {"8867-4": reading}, None: {"8867-4": reading}},
    )


def _phase(slot: float, interval: float = INTERVAL) -> int:
    """Which of the interval's slots a loop time is (a whole interval wraps to slot 0)."""
    return round((slot % interval) / (interval / PHASES)) % PHASES


class Wards:
    """Fresh ward codes, each with a channel in its group on the real channel layer."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.run = uuid.uuid4().hex[:8]
        self.channels: dict[str, str] = {}

    async def add(self, count: int) -> list[str]:
        wards = [f"slots-{self.run}-{len(self.channels) + i}" for i in range(count)]
        for ward in wards:
            self.channels[ward] = await self.layer.new_channel()
            await self.layer.group_add(ward_group_name(ward), self.channels[ward])
        return wards

    async def frame(self, ward: str) -> dict[str, Any]:
        message = await asyncio.wait_for(self.layer.receive(self.channels[ward]), 5)
        event = ward_event_decode(message)
        assert event["type"] == "vitals" and event["ward"] == ward
        return event

    async def nothing_more(self, wait: float) -> None:
        async def none_on(channel: str) -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(self.layer.receive(channel), wait)

        await asyncio.gather(*(none_on(channel) for channel in self.channels.values()))

    async def close(self) -> None:
        for ward, channel in self.channels.items():
            await self.layer.group_discard(ward_group_name(ward), channel)


@pytest_asyncio.fixture
async def wards() -> AsyncIterator[Wards]:
    wards = Wards()
    yield wards
    await wards.close()


async def test_each_ward_gets_one_frame_in_its_own_slot_of_the_interval(wards: Wards) -> None:
    codes = await wards.add(10)  # more wards than slots: two share one
    coalescer = WardVitalsCoalescer(interval=INTERVAL)
    loop = asyncio.get_running_loop()
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    before = loop.time()
    for value, ward in enumerate(codes):
        coalescer.add(_recorded(ward, 60 + value, at))
        # A later reading of the same ward before its slot joins the same frame.
        coalescer.add(_recorded(ward, 70 + value, at))
    after = loop.time()
    slots = dict(coalescer._due)

    # The wards seen take the slots 0, 4, 2, 6, 1, 5, 3, 7, then 0 and 4 again, each at most
    # one interval after its readings.
    assert [_phase(slots[ward]) for ward in codes] == [0, 4, 2, 6, 1, 5, 3, 7, 0, 4]
    assert all(before - EARLY <= slots[ward] < after + INTERVAL for ward in codes)

    for value, ward in enumerate(codes):
        event = await wards.frame(ward)
        assert loop.time() >= slots[ward] - EARLY
        assert event["beds"] == [  # the bed's patient; nothing for readings of no patient
            {
                "bed": f"bed-{ward}",
                "patient": f"patient-{ward}",
                "vitals": {"8867-4": [70 + value, epoch_ms(at)]},
            }
        ]
    await wards.nothing_more(INTERVAL)  # one frame per ward for what came in one interval


async def test_a_ward_sends_at_most_one_frame_an_interval(wards: Wards) -> None:
    [ward] = await wards.add(1)
    coalescer = WardVitalsCoalescer(interval=INTERVAL)
    loop = asyncio.get_running_loop()
    coalescer.add(_recorded(ward, 60))
    first_slot = coalescer._due[ward]
    await wards.frame(ward)
    # Readings that come in just after the frame left wait for a later slot of the ward's
    # phase (the next, unless the frame reached us more than an interval late), in one frame.
    added = loop.time()
    for value in range(61, 66):
        coalescer.add(_recorded(ward, value))
    second_slot = coalescer._due[ward]
    assert second_slot >= added - EARLY
    intervals = (second_slot - first_slot) / INTERVAL
    assert intervals >= 1 - 1e-6 and intervals == pytest.approx(round(intervals), abs=1e-6)
    event = await wards.frame(ward)
    assert loop.time() >= second_slot - EARLY
    assert event["beds"][0]["vitals"]["8867-4"][0] == 65
    await wards.nothing_more(INTERVAL)


async def test_a_ward_whose_slot_comes_first_wakes_the_sleeping_tick(wards: Wards) -> None:
    interval = 1.6  # slots 0.4 s apart: the order below holds on a loaded machine too
    first, later, earlier = await wards.add(3)
    coalescer = WardVitalsCoalescer(interval=interval)
    loop = asyncio.get_running_loop()
    for ward in (first, later, earlier):  # slots 0, 4, 2 of 8
        coalescer.add(_recorded(ward, 60))
    for ward in (first, later, earlier):
        await wards.frame(ward)

    # Just past a slot 0: the tick sleeps until `later`'s slot (half an interval on) when
    # `earlier` (a quarter on) arrives.
    await asyncio.sleep(interval - (loop.time() % interval) + 0.01)
    coalescer.add(_recorded(later, 61))
    await asyncio.sleep(0.05)  # the tick is asleep until `later`'s slot
    coalescer.add(_recorded(earlier, 62))
    assert _phase(coalescer._due[earlier], interval) == 2
    assert _phase(coalescer._due[later], interval) == 4
    assert coalescer._due[earlier] < coalescer._due[later]

    both = get_channel_layer()
    channel = await both.new_channel()
    for ward in (later, earlier):
        await both.group_add(ward_group_name(ward), channel)
    try:
        order = [ward_event_decode(await asyncio.wait_for(both.receive(channel), 5))["ward"]]
        order.append(ward_event_decode(await asyncio.wait_for(both.receive(channel), 5))["ward"])
    finally:
        for ward in (later, earlier):
            await both.group_discard(ward_group_name(ward), channel)
    assert order == [earlier, later]
