"""A minimal RFC 6455 WebSocket client over asyncio streams, for the dashboard benchmark.

Why not a library: ``websockets`` is not in the project's environment, and a benchmark client
must cost little next to the server it measures (thousands of sockets on two shared cores).
It does what a dashboard does and no more: the opening handshake (``Host``, ``Origin``,
``Cookie``; the ``Sec-WebSocket-Accept`` checked), unmasked server frames (a masked one is a
protocol error), masked client frames, text frames, fragmented messages, ping → pong, and the
closing handshake. No extensions (no permessage-deflate), no subprotocols.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
MAX_MESSAGE_BYTES = 64 * 2**20  # a bound on what a buggy server could make us buffer
NORMAL_CLOSURE = 1000
NO_STATUS = 1005  # a close frame without a code
ABNORMAL_CLOSURE = 1006  # the connection ended without a close frame

# Everything a failed connect or exchange can raise (besides TimeoutError from the caller).
WS_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,  # asyncio.IncompleteReadError
    asyncio.LimitOverrunError,
    ValueError,  # includes ProtocolError and HandshakeRefused
)


class ProtocolError(ValueError):
    """The server broke RFC 6455 (or answered something that is not a WebSocket)."""


class HandshakeRefused(ValueError):
    """The server answered the opening handshake with something other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"handshake answered {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Message:
    opcode: int  # OP_TEXT, OP_BINARY or OP_CLOSE
    payload: bytes


def _mask(payload: bytes, key: bytes) -> bytes:
    # XOR as one big integer: C speed for the few bytes a client sends.
    n = len(payload)
    if n == 0:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + _mask(payload, key)


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.close_code: int | None = None  # the server's, once its close frame arrived
        self.closed = False

    @classmethod
    async def connect(
        cls, *, host: str, port: int, path: str, origin: str, cookie: str | None = None
    ) -> WebSocket:
        """Open the TCP connection and do the opening handshake (the caller bounds the time)."""
        reader, writer = await asyncio.open_connection(host, port, limit=2**20)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: {origin}",
        ]
        if cookie:
            lines.append(f"Cookie: {cookie}")
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head[:-4].split(b"\r\n")
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ProtocolError(f"not an HTTP status line: {status_line[:80]!r}")
            status = int(parts[1])
            if status != 101:
                raise HandshakeRefused(status)
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())  # noqa: S324 - RFC 6455 mandates SHA-1
            if headers.get(b"sec-websocket-accept") != expected:
                raise ProtocolError("wrong Sec-WebSocket-Accept")
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        if b1 & 0x80:
            raise ProtocolError("the server masked a frame")
        if b0 & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        if length > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"a {length}-byte frame")
        payload = await self.reader.readexactly(length) if length else b""
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def recv(self) -> Message:
        """The next data message (text or binary) or the server's close (OP_CLOSE, after
        which ``close_code`` is set and the connection is closed). Pings are answered here."""
        parts: list[bytes] = []
        opcode = None
        size = 0
        while True:
            fin, op, payload = await self._frame()
            if op == OP_PING:
                await self._send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.close_code = (
                    struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else NO_STATUS
                )
                if not self.closed:
                    # Echo the close, as RFC 6455 asks, then end the TCP connection.
                    try:
                        await self._send(OP_CLOSE, payload[:2])
                    except WS_ERRORS:
                        pass
                self.abort()
                return Message(OP_CLOSE, payload)
            if op == OP_CONTINUATION:
                if opcode is None:
                    raise ProtocolError("continuation without a first fragment")
            elif op in (OP_TEXT, OP_BINARY):
                if opcode is not None:
                    raise ProtocolError("a new message inside a fragmented one")
                opcode = op
            else:
                raise ProtocolError(f"unknown opcode {op}")
            size += len(payload)
            if size > MAX_MESSAGE_BYTES:
                raise ProtocolError("message too large")
            parts.append(payload)
            if fin:
                return Message(opcode, parts[0] if len(parts) == 1 else b"".join(parts))

    async def _send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(frame(opcode, payload))
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self._send(OP_TEXT, text.encode("utf-8"))

    async def close_start(self, code: int = NORMAL_CLOSURE) -> None:
        """Send our close frame; the reading side then receives the server's close (its
        code in ``close_code``) and ends the connection. Whoever reads must bound the wait."""
        if self.closed:
            return
        self.closed = True
        await self._send(OP_CLOSE, struct.pack("!H", code))

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a network failure)."""
        self.closed = True
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()
