"""autobahn's per-frame debug-log arguments are plain text in the ASGI processes."""

from __future__ import annotations

import autobahn.util
from autobahn.websocket.protocol import WebSocketProtocol

import config.asgi  # noqa: F401 - importing the ASGI module applies the setting


def test_the_arguments_autobahn_builds_for_every_frame_sent_are_plain_text() -> None:
    # What WebSocketProtocol.sendData passes to log.debug for each frame: with click's
    # styling these carry ANSI escapes and cost 7 % of the dashboards' daphne in a fan-out.
    func = autobahn.util.hltype(WebSocketProtocol.sendData)
    value = autobahn.util.hlval(10_240)

    assert "\x1b" not in func
    assert "\x1b" not in value
    assert value == "10240"
    assert "autobahn" in func and "sendData" in func
