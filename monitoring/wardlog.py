"""Per-ward sequence numbers and the replay log behind gap-free dashboard reconnects.

Every event published to a ward (vitals, alert transitions, NEWS2 changes) is numbered from a
per-ward counter and appended to a capped per-ward log in one atomic step (a Lua script), so
the log holds contiguous sequence numbers in order. A dashboard reconnecting with the last
number it applied gets exactly what it missed, or a fresh snapshot when the log no longer
reaches back that far: never a silent gap.

With Redis (any real deployment) counters and logs are shared by every process. The embedded
demo has no Redis and runs in one process, so it keeps them in memory.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from django.conf import settings

LOG_LENGTH = 2000

_APPEND = """
local seq = redis.call('INCR', KEYS[1])
local event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('RPUSH', KEYS[2], event)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
return seq
"""

# Returns {current seq, first seq held, events after ARGV[1]...} or {current, first} when the
# log does not reach back to ARGV[1] + 1.
_SINCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local length = redis.call('LLEN', KEYS[2])
local first = current - length + 1
local wanted = tonumber(ARGV[1]) + 1
local result = {current, first}
if wanted < first or wanted > current then
  return result
end
local events = redis.call('LRANGE', KEYS[2], wanted - first, -1)
for i = 1, #events do result[#result + 1] = events[i] end
return result
"""


@dataclass(frozen=True, slots=True)
class Backlog:
    current: int  # the ward's latest sequence number
    # Every event after the one asked for, as the JSON text the log holds; None: gone. Kept as
    # text so a replay is sent without decoding and re-encoding each event (bench fanout).
    texts: list[str] | None

    def replay_message(self, from_seq: int) -> str:
        """The dashboard's ``replay`` message (docs/dashboard-protocol.md) as JSON text."""
        events = ",".join(self.texts or ())
        return f'{{"type":"replay","from_seq":{int(from_seq)},"events":[{events}]}}'


def _keys(ward_code: str) -> list[str]:
    prefix = getattr(settings, "CHANNEL_LAYER_PREFIX", "portal")
    return [f"{prefix}:ward:{ward_code}:seq", f"{prefix}:ward:{ward_code}:log"]


def _redis_url() -> str:
    return settings.REDIS_URL


class _MemoryLog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.logs: dict[str, deque[str]] = {}

    def append(self, ward_code: str, event: dict[str, Any]) -> int:
        with self.lock:
            seq = self.counters.get(ward_code, 0) + 1
            self.counters[ward_code] = seq
            text = json.dumps({"seq": seq, **event}, separators=(",", ":"))
            self.logs.setdefault(ward_code, deque(maxlen=LOG_LENGTH)).append(text)
            return seq

    def since(self, ward_code: str, last_seq: int) -> Backlog:
        with self.lock:
            current = self.counters.get(ward_code, 0)
            log = list(self.logs.get(ward_code, ()))
        first = current - len(log) + 1
        return _backlog(last_seq, current, first, log[max(0, last_seq + 1 - first) :])


_memory = _MemoryLog()


def _decode(result: list[Any]) -> tuple[int, int, list[str]]:
    current, first, *events = result
    return int(current), int(first), [e.decode() if isinstance(e, bytes) else e for e in events]


def _backlog(last_seq: int, current: int, first: int, events: list[str]) -> Backlog:
    if last_seq == current:
        return Backlog(current, [])
    if not first <= last_seq + 1 <= current:
        return Backlog(current, None)
    return Backlog(current, events)


class WardLog:
    """Synchronous access (Celery workers, writer threads)."""

    def __init__(self) -> None:
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                _redis_url(), socket_timeout=2, socket_connect_timeout=2
            )
        return self._client

    def append(self, ward_code: str, event: dict[str, Any]) -> int:
        if not _redis_url():
            return _memory.append(ward_code, event)
        seq = self._redis().eval(
            _APPEND, 2, *_keys(ward_code), json.dumps(event, separators=(",", ":")), LOG_LENGTH
        )
        return int(seq)


class AsyncWardLog:
    """Asynchronous access (the ingestion process's pusher, the dashboard consumer)."""

    def __init__(self) -> None:
        self._clients: dict[int, Any] = {}

    def _redis(self) -> Any:
        import asyncio

        import redis.asyncio

        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = redis.asyncio.Redis.from_url(
                _redis_url(),
                socket_timeout=2,
                socket_connect_timeout=2,
                # A reconnect storm of dashboards must not exhaust the pool (perf-facts.md).
                max_connections=getattr(settings, "REDIS_MAX_CONNECTIONS", 1000),
            )
            self._clients[loop_id] = client
        return client

    async def append(self, ward_code: str, event: dict[str, Any]) -> int:
        if not _redis_url():
            return _memory.append(ward_code, event)
        seq = await self._redis().eval(
            _APPEND, 2, *_keys(ward_code), json.dumps(event, separators=(",", ":")), LOG_LENGTH
        )
        return int(seq)

    async def current(self, ward_code: str) -> int:
        if not _redis_url():
            return _memory.since(ward_code, 0).current
        value = await self._redis().get(_keys(ward_code)[0])
        return int(value or 0)

    async def since(self, ward_code: str, last_seq: int) -> Backlog:
        if not _redis_url():
            return _memory.since(ward_code, last_seq)
        current, first, events = _decode(
            await self._redis().eval(_SINCE, 2, *_keys(ward_code), last_seq)
        )
        return _backlog(last_seq, current, first, events)


ward_log = WardLog()
async_ward_log = AsyncWardLog()
