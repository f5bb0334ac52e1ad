"""autobahn's per-frame debug-log arguments are plain text in the ASGI processes."""

from __future__ import annotations

from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol

import config.asgi  # noqa: F401 - importing the ASGI module applies the setting


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Log:
    """Records what autobahn hands to ``log.debug``: it builds the arguments before the call,
    whatever the log level, so their cost is paid on every frame."""

    def __init__(self) -> None:
        self.debug_calls: list[dict[str, Any]] = []

    def debug(self, _format: str, **kwargs: Any) -> None:
        self.debug_calls.append(kwargs)


def test_a_frame_sent_builds_its_debug_log_arguments_as_plain_text() -> None:
    # The state daphne's protocol has once a socket is open (set in connectionMade), enough
    # for WebSocketProtocol.sendData, the call every dashboard frame goes through.
    protocol = WebSocketServerProtocol()
    protocol.transport = _Transport()
    protocol.log = _Log()
    protocol.send_queue = deque()
    protocol.state = WebSocketProtocol.STATE_OPEN
    protocol.trafficStats = TrafficStats()
    protocol.logOctets = False
    protocol.peer = "tcp:127.0.0.1:50000"

    protocol.sendData(b"x" * 10_240)

    assert protocol.transport.written == [b"x" * 10_240]
    (arguments,) = protocol.log.debug_calls
    # With click's styling each argument carried ANSI escapes: 7 % of the dashboards' daphne
    # in a fan-out to 1,000 (docs/scaling.md).
    assert arguments == {
        "func": "<autobahn.websocket.protocol.WebSocketProtocol.sendData>",
        "peer": "tcp:127.0.0.1:50000",
        "data_len": "10240",
    }
