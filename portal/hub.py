"""One channel-layer subscription per server process, shared by the dashboards it serves.

Channels gives every consumer a channel of its own, and the Redis pub/sub layer subscribes and
unsubscribes each one in Redis through one lock per connection, which publishing waits on
too. When a thousand dashboards dropped and reconnected at once (bench fanout's reconnect
storm), those thousands of subscribe/unsubscribe round trips queued behind each other, ward
events timed out behind them, and every reconnect failed. Here the process subscribes once per
ward (and per user with an open dashboard), through one channel of the same layer, and hands
each message to the dashboards in memory; a dashboard connecting or leaving touches Redis only
when it is the first or last of its ward in this process.

Messages carry the name of the group they were sent to (``monitoring.events`` puts it in
``"group"``), since a message received on a channel does not say which of its groups it came
through.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]
RETRY_SECONDS = 1.0


class DashboardHub:
    """Members are coroutine functions (a consumer's ``deliver``) joined to group names."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.members: dict[str, set[Deliver]] = {}
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._channel: str | None = None
        self._channel_ready: asyncio.Lock = asyncio.Lock()
        self._receiver: asyncio.Task[None] | None = None

    async def join(self, group: str, deliver: Deliver) -> None:
        """Deliver the group's messages to ``deliver`` from now on (once this returns)."""
        self.members.setdefault(group, set()).add(deliver)
        subscribed = self._subscribed.get(group)
        if subscribed is None:
            subscribed = self._subscribed[group] = asyncio.get_running_loop().create_future()
            try:
                await self.layer.group_add(group, await self._channel_name())
            except BaseException as error:
                del self._subscribed[group]
                self._leave_locally(group, deliver)
                subscribed.set_exception(error)
                subscribed.exception()  # retrieved: the joiners waiting get it raised
                raise
            subscribed.set_result(None)
        await asyncio.shield(subscribed)

    async def leave(self, group: str, deliver: Deliver) -> None:
        if not self._leave_locally(group, deliver):
            return
        # The last member of the group in this process: unsubscribe (unless someone joined
        # again meanwhile), and stop receiving when no group is left.
        self._subscribed.pop(group, None)
        if self._channel is not None:
            try:
                await self.layer.group_discard(group, self._channel)
            except Exception:
                logger.warning("leaving a channel-layer group failed", exc_info=True)
        if not self.members and self._receiver is not None:
            self._receiver.cancel()
            self._receiver = None
            self._channel = None

    def _leave_locally(self, group: str, deliver: Deliver) -> bool:
        """Remove a member; True when it was the group's last one."""
        members = self.members.get(group)
        if members is None:
            return False
        members.discard(deliver)
        if members:
            return False
        del self.members[group]
        return True

    async def _channel_name(self) -> str:
        async with self._channel_ready:
            if self._channel is None:
                self._channel = await self.layer.new_channel(prefix="dashboards.")
                self._receiver = asyncio.get_running_loop().create_task(
                    self._receive(self._channel), name="dashboard-hub"
                )
            return self._channel

    async def _receive(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("receiving from the channel layer failed", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for deliver in tuple(self.members.get(message.get("group", ""), ())):
                try:
                    await deliver(message)
                except Exception:
                    logger.exception("a dashboard failed to take a message")


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DashboardHub] = (
    weakref.WeakKeyDictionary()
)


def dashboard_hub() -> DashboardHub:
    """The hub of the running event loop (daphne has one; tests start one per test)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = DashboardHub()
    return hub
