"""A channel-layer client in the bench process: subscribed to ward groups, it timestamps every
ward event the moment it arrives, the way daphne's consumers would receive it.

It uses the portal's own channel layer (``channels_redis.pubsub``, settings from the bench
environment: same Redis URL and ``CHANNEL_LAYER_PREFIX`` as daphne and Celery), on an event
loop in a thread of its own, so the harness's main thread can keep waiting on processes.
Received events are kept as (time.time(), event), where ``event`` is what the dashboard
consumer would forward (``message["text"]``, decoded).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from bench.common import BenchError

READY_TIMEOUT = 10.0
MAX_EVENTS = 2_000_000  # a count bound besides the time bound the harness puts on a run


class GroupListener:
    def __init__(self, groups: Sequence[str], *, keep_vitals: bool = True) -> None:
        self.groups = list(groups)
        self.keep_vitals = keep_vitals
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.dropped = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="group-listener", daemon=True)

    def start(self) -> GroupListener:
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT) or self.error is not None:
            raise BenchError(f"the channel-layer listener did not subscribe: {self.error!r}")
        return self

    def stop(self) -> list[tuple[float, dict[str, Any]]]:
        if self._loop is not None and self._task is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)
        return self.events

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self.error = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        from channels.layers import get_channel_layer

        from monitoring.events import ward_event_decode

        layer = get_channel_layer()
        channel = await layer.new_channel()
        for group in self.groups:
            await layer.group_add(group, channel)
        self._ready.set()
        try:
            while True:
                message = await layer.receive(channel)
                received_at = time.time()
                event = ward_event_decode(message) if "text" in message else message
                if not self.keep_vitals and event.get("type") == "vitals":
                    continue
                if len(self.events) >= MAX_EVENTS:
                    self.dropped += 1
                    continue
                self.events.append((received_at, event))
        except asyncio.CancelledError:
            pass
        finally:
            for group in self.groups:
                try:
                    await layer.group_discard(group, channel)
                except Exception:  # noqa: S110 - Redis gone at shutdown: nothing to undo
                    pass
