"""Live pushes of vital signs to ward dashboards over the channel layer.

Pushes are coalesced per ward on a short tick rather than sent per request: at 300 devices
posting every second, one ``group_send`` per message would be 300 sends/s per ward group,
while a 0.5 s tick sends at most two per ward with the newest value of each vital.
Vitals pushes are not durable: a dashboard that misses one gets a fresh snapshot; MariaDB
holds every reading regardless.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypedDict

from channels.layers import get_channel_layer

from monitoring.metrics import LIVE_PUSH_FAILURES
from monitoring.services import RecordedMessage

logger = logging.getLogger(__name__)

PUSH_INTERVAL_SECONDS = 0.5
SEND_TIMEOUT_SECONDS = 2.0


def ward_group_name(ward_code: str) -> str:
    """The one name of a ward's channel-layer group (ward codes are slugs, valid here)."""
    return f"ward.{ward_code}"


class VitalSample(TypedDict):
    bed: str
    patient: str
    code: str
    value: float
    unit: str
    observed_at: str
    artifact: bool


class WardVitalsEvent(TypedDict):
    type: str  # "ward.vitals", handled by the dashboard consumer's ward_vitals()
    ward: str
    vitals: list[VitalSample]


class WardVitalsCoalescer:
    """Keeps the newest value per (ward, bed, code) and sends them on a tick."""

    def __init__(self, *, interval: float = PUSH_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._pending: dict[str, dict[tuple[str, str], VitalSample]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, recorded: RecordedMessage) -> None:
        """Queue a committed message's newest readings; never blocks, never raises."""
        if recorded.ward_code is None or recorded.bed_public_id is None:
            return
        ward = self._pending.setdefault(recorded.ward_code, {})
        for patient, readings in recorded.latest.items():
            if patient is None:
                continue  # a bed without an admitted patient shows no vitals
            for reading in readings.values():
                key = (recorded.bed_public_id, reading.code)
                current = ward.get(key)
                observed_at = reading.observed_at.isoformat()
                if current is not None and current["observed_at"] > observed_at:
                    continue
                ward[key] = VitalSample(
                    bed=recorded.bed_public_id,
                    patient=patient,
                    code=reading.code,
                    value=reading.value,
                    unit=reading.unit,
                    observed_at=observed_at,
                    artifact=reading.artifact,
                )
        self._ensure_ticking()

    def _ensure_ticking(self) -> None:
        if self._task is None or self._task.done() or self._task.get_loop().is_closed():
            self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while self._pending:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> int:
        """Send everything pending now; return the number of ward events sent."""
        pending, self._pending = self._pending, {}
        layer = get_channel_layer()
        sent = 0
        for ward_code, samples in pending.items():
            event: WardVitalsEvent = {
                "type": "ward.vitals",
                "ward": ward_code,
                "vitals": list(samples.values()),
            }
            if await self._send(layer, ward_code, event):
                sent += 1
        return sent

    async def _send(self, layer: Any, ward_code: str, event: WardVitalsEvent) -> bool:
        try:
            await asyncio.wait_for(
                layer.group_send(ward_group_name(ward_code), event), SEND_TIMEOUT_SECONDS
            )
        except Exception:
            # Redis down or slow: the readings are safe in MariaDB and dashboards resync on
            # reconnect; losing this push must not touch the ingestion path.
            LIVE_PUSH_FAILURES.inc()
            logger.warning("live vitals push to a ward group failed", exc_info=True)
            return False
        return True


ward_vitals = WardVitalsCoalescer()
