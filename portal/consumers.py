"""The ward dashboard's WebSocket (protocol: docs/dashboard-protocol.md).

Access is decided before the socket joins any group; refusals are sent as close codes the
page can explain (4401 not logged in, 4403 not this ward, 4404 no such ward). On connect the
client gets what it missed (replay) or a snapshot of the ward, then every ward event in order.
The session is re-checked every ``RECHECK_SECONDS`` and on logout or revocation signals, so a
dashboard whose session ended, or whose clinician lost the ward, closes and says so instead
of freezing on stale values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ValidationError
from django.utils import timezone
from redis.exceptions import RedisError

from alerts.models import Alert
from alerts.services import AlertActionRefused, alert_acknowledge
from monitoring.events import user_group_name, ward_group_name
from monitoring.metrics import OPEN_WEBSOCKETS
from monitoring.wardlog import async_ward_log
from patients.audit import access_record_ward
from patients.selectors import WardVisibility, ward_visibility
from portal.dbthreads import dashboard_db
from portal.hub import dashboard_hub
from portal.snapshot import ward_snapshot

logger = logging.getLogger(__name__)

NOT_LOGGED_IN = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
TOO_SLOW = 4408
OUTDATED = 4426
# The version of docs/dashboard-protocol.md this server speaks. The page's socket URL carries
# the version it was served with (``?protocol=``); a page from before a change of the protocol
# (a screen left open through an upgrade) is closed with OUTDATED rather than fed frames it
# would misread, and the page reloads itself.
PROTOCOL = "2"
RECHECK_SECONDS = 30
# A client that has not confirmed this many events is not keeping up: it is disconnected and
# resyncs from a snapshot, so what a slow client can make the server queue stays bounded.
MAX_UNACKNOWLEDGED_EVENTS = 600
# A client that missed more than this gets a snapshot instead: cheaper than replaying
# minutes of vitals frames, and bounded in size.
MAX_REPLAY_EVENTS = 300


# A reconnect storm (a network blip, a daphne restart) brings every dashboard of a ward back
# at once; building the ward's snapshot once per this many seconds, not once per socket, keeps
# that from saturating the server (a 36-bed ward's snapshot reads 15 minutes of readings,
# about 0.1-0.4 s of MariaDB). Events after the shared snapshot come from the ward log.
SNAPSHOT_REUSE_SECONDS = 5.0
_snapshots: dict[str, tuple[float, int, str]] = {}
_snapshot_locks: dict[tuple[int, str], asyncio.Lock] = {}


T = TypeVar("T")


async def _ward_log_read(read: Callable[[], Awaitable[T]]) -> T:
    """A read of the ward log for a connecting dashboard, tried a second time if Redis failed.

    In a reconnect storm on a saturated node the event loop can lag past the Redis client's
    2 s connect timeout while the pool opens connections for a burst of catch-ups (104 such
    timeouts in one storm of 1,000, bench fanout): each closed its socket with 1011 and cost
    the screen one more reconnect. A second failure still closes it so, and the page
    reconnects with backoff."""
    try:
        return await read()
    except RedisError:
        logger.warning("reading the ward log failed; trying once more")
        return await read()


async def _ward_snapshot_shared(ward_code: str) -> tuple[int, str]:
    """(seq, the snapshot message as JSON text): built and encoded once per ward and period."""
    loop = asyncio.get_running_loop()
    lock = _snapshot_locks.setdefault((id(loop), ward_code), asyncio.Lock())
    async with lock:
        cached = _snapshots.get(ward_code)
        if cached is not None and loop.time() - cached[0] < SNAPSHOT_REUSE_SECONDS:
            return cached[1], cached[2]
        # The number is read before the snapshot: any event after it is also delivered, and
        # the client applies events idempotently (alerts by id, vitals by time).
        seq = await _ward_log_read(lambda: async_ward_log.current(ward_code))
        snapshot = await dashboard_db.run(ward_snapshot)(ward_code=ward_code)
        text = json.dumps({**snapshot, "type": "snapshot", "seq": seq})
        _snapshots[ward_code] = (loop.time(), seq, text)
        return seq, text


class WardConsumer(AsyncJsonWebsocketConsumer):
    # No channel of its own: ward and user messages come through the process's DashboardHub
    # (portal.hub), so a socket opening or closing costs Redis nothing.
    channel_layer_alias = None
    ward_code: str = ""
    groups_joined: list[str]

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' own dispatch, without its thread hop per message to close the event loop
        thread's old database connections (Channels 4.2+): this consumer has none, since all
        its database work runs on ``dashboard_db``'s threads. Ward events reach the socket
        through the hub (``deliver``), not here; what still comes here is the socket's own
        traffic, the clients' acks among it. Before the hub, the hop was made for every frame
        to every socket: a third of daphne's CPU at a thousand dashboards (bench fanout)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.groups_joined = []
        self.sent_seq = 0
        self.acknowledged_seq = 0
        self.recheck: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # Ward events that arrive before the snapshot or replay has been sent wait here.
        self.held: list[dict[str, Any]] | None = []
        self.closing = False
        user = self.scope.get("user")
        self.ward_code = self.scope["url_route"]["kwargs"]["ward_code"]
        # Accept first: a close before accepting reaches the browser as a failed handshake
        # (1006), and the page could not tell the clinician why.
        await self.accept()
        if self._query().get("protocol", [""])[0] != PROTOCOL:
            await self._refuse(
                OUTDATED, "outdated", "This page is out of date: the portal was updated."
            )
            return
        if user is None or not user.is_authenticated:
            await self._refuse(NOT_LOGGED_IN, "session_ended", "Your session has ended.")
            return
        refusal = await dashboard_db.run(self._admit)()
        if refusal is not None:
            await self._refuse(*refusal)
            return
        OPEN_WEBSOCKETS.inc()
        self.counted = True
        hub = dashboard_hub()
        for group in (ward_group_name(self.ward_code), user_group_name(user.pk)):
            self.groups_joined.append(group)
            await hub.join(group, self.deliver)
        await self._catch_up()
        held, self.held = self.held or [], None
        for message in held:
            if message["seq"] > self.sent_seq and not self.closing:
                await self.ward_event(message)
        self.recheck = asyncio.get_running_loop().create_task(self._recheck_periodically())

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            OPEN_WEBSOCKETS.dec()
            self.counted = False
        self.closing = True
        if self.recheck is not None:
            self.recheck.cancel()
        for task in self.tasks:
            task.cancel()
        hub = dashboard_hub()
        for group in self.groups_joined:
            await hub.leave(group, self.deliver)
        self.groups_joined = []

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Channels' send, quiet when the connection is already gone.

        When a network blip drops every dashboard at once, daphne learns of each lost
        connection before this consumer gets its disconnect: ward frames and catch-ups sent in
        between raised ``Disconnected``, and each was logged as an error with its traceback
        (2,217 in one reconnect storm of 1,000, bench fanout), on the event loop the surviving
        dashboards wait on. Nothing can reach such a socket; its disconnect follows.
        """
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            self.closing = True

    async def _refuse(self, code: int, kind: str, detail: str) -> None:
        if self.closing:
            return
        self.closing = True
        await self.send_json({"type": kind, "detail": detail})
        await self.close(code=code)

    async def deliver(self, message: dict[str, Any]) -> None:
        """A message for this socket from the hub (its ward's events, its user's notices).

        Called from the hub's receiving task, which serves every socket of the process: ward
        events are sent at once (a send only queues bytes), anything that needs the database
        runs in a task of its own."""
        if self.closing:
            return
        kind = message.get("type")
        if kind == "ward.event":
            if self.held is not None:
                self.held.append(message)
            else:
                await self.ward_event(message)
        elif kind == "session.ended":
            await self.session_ended(message)
        elif kind == "access.changed":
            task = asyncio.get_running_loop().create_task(self.access_changed(message))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _admit(self) -> tuple[int, str, str] | None:
        """The access check and, when access is granted, the audit of the subscription: one
        trip to the database threads per connect."""
        refusal = self._access_refusal()
        if refusal is None:
            self._audit_subscription()
        return refusal

    def _access_refusal(self) -> tuple[int, str, str] | None:
        visibility = ward_visibility(user_id=self.scope["user"].pk, ward_code=self.ward_code)
        if visibility is WardVisibility.UNKNOWN_WARD:
            return NOT_FOUND, "unknown_ward", "There is no such ward."
        if visibility is WardVisibility.HIDDEN:
            return FORBIDDEN, "access_revoked", "You do not have access to this ward."
        return None

    def _session_alive(self) -> bool:
        session: SessionBase | None = self.scope.get("session")
        if session is None or session.session_key is None:
            return False
        return session.exists(session.session_key)

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(self.scope.get("query_string", b"").decode("latin-1"))

    def _last_seq(self) -> int | None:
        try:
            return int(self._query()["last_seq"][0])
        except (KeyError, ValueError, IndexError):
            return None

    def _audit_subscription(self) -> None:
        """A dashboard subscription reads every patient on the ward: one access row each."""
        access_record_ward(
            user=self.scope["user"],
            ward_code=self.ward_code,
            action="dashboard.subscribe",
            resource=f"ws/wards/{self.ward_code}/",
            address=(self.scope.get("client") or [None])[0],
        )

    async def _catch_up(self) -> None:
        last_seq = self._last_seq()
        if last_seq is not None:
            backlog = await _ward_log_read(lambda: async_ward_log.since(self.ward_code, last_seq))
            if backlog.texts is not None and len(backlog.texts) <= MAX_REPLAY_EVENTS:
                await self.send(text_data=backlog.replay_message(last_seq + 1))
                self.sent_seq = self.acknowledged_seq = backlog.current
                return
        seq, snapshot_text = await _ward_snapshot_shared(self.ward_code)
        await self.send(text_data=snapshot_text)
        self.sent_seq = self.acknowledged_seq = seq
        # A shared snapshot may be up to SNAPSHOT_REUSE_SECONDS old: send what the ward log
        # holds after it (this socket is already in the group, so nothing falls in between;
        # the client ignores any event twice).
        backlog = await _ward_log_read(lambda: async_ward_log.since(self.ward_code, seq))
        if backlog.texts:
            await self.send(text_data=backlog.replay_message(seq + 1))
            self.sent_seq = self.acknowledged_seq = backlog.current

    async def _recheck_periodically(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            if not await self._still_allowed():
                return

    async def _still_allowed(self) -> bool:
        if not await dashboard_db.run(self._session_alive)():
            await self._refuse(NOT_LOGGED_IN, "session_ended", "Your session has ended.")
            return False
        refusal = await dashboard_db.run(self._access_refusal)()
        if refusal is not None:
            await self._refuse(*refusal)
            return False
        return True

    # --- from the client -------------------------------------------------------------------

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "acknowledge":
            await self._acknowledge(str(content.get("alert", "")))
        elif kind == "ack":
            seq = content.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                self.acknowledged_seq = max(self.acknowledged_seq, min(seq, self.sent_seq))
        elif kind == "ping":
            await self.send_json({"type": "pong", "server_time": timezone.now().isoformat()})
        else:
            await self.send_json({"type": "error", "code": "unknown_message", "detail": "?"})

    async def _acknowledge(self, alert_public_id: str) -> None:
        if not await self._still_allowed():
            return
        # Not retried on a lost connection: the acknowledgement may have committed.
        result = await dashboard_db.run(self._acknowledge_in_database, retry_lost_connection=False)(
            alert_public_id
        )
        await self.send_json({"type": "ack_result", "alert": alert_public_id, **result})

    def _acknowledge_in_database(self, alert_public_id: str) -> dict[str, Any]:
        user = self.scope["user"]
        try:
            alert = Alert.objects.get(public_id=alert_public_id, bed__ward__code=self.ward_code)
        except (Alert.DoesNotExist, ValidationError):
            return {"ok": False, "code": "not_found", "detail": "No such alert on this ward."}
        try:
            alert_acknowledge(alert=alert, user=user)
        except AlertActionRefused as refused:
            return {"ok": False, "code": refused.code, "detail": refused.detail}
        return {"ok": True}

    # --- from the channel layer ------------------------------------------------------------

    async def ward_event(self, message: dict[str, Any]) -> None:
        seq = message["seq"]
        if seq - self.acknowledged_seq > MAX_UNACKNOWLEDGED_EVENTS:
            await self._refuse(TOO_SLOW, "too_slow", "This screen fell behind; reloading the ward.")
            return
        self.sent_seq = max(self.sent_seq, seq)
        await self.send(text_data=message["text"])  # encoded once by the publisher

    async def session_ended(self, message: dict[str, Any]) -> None:
        session = self.scope.get("session")
        if message.get("session_key") in (None, getattr(session, "session_key", None)):
            await self._refuse(NOT_LOGGED_IN, "session_ended", "You logged out.")

    async def access_changed(self, message: dict[str, Any]) -> None:
        # "ward": None concerns every ward (the account itself changed).
        if message.get("ward") in (None, self.ward_code):
            await self._still_allowed()
