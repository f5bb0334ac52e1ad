"""A lean HTTP/1.1 client over asyncio streams, for load generators.

Why not httpx: on two shared cores its per-request overhead (pool bookkeeping, header models,
h11 state machine) makes the load generator compete with the server it measures. This client
does only what a benchmark needs: one request at a time per keep-alive connection, a prebuilt
request head, and a response read by ``Content-Length`` or chunked transfer encoding (daphne
answers chunked when the application sets no length, which the ingest path does not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

# Everything a failed exchange can raise; the caller counts it and the connection is reopened.
EXCHANGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,  # asyncio.IncompleteReadError: the server closed mid-response
    asyncio.LimitOverrunError,
    ValueError,  # includes ProtocolError
)


class ProtocolError(ValueError):
    """The server's answer is not HTTP/1.x as this client understands it."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def request_head_prefix(
    *, method: str, host: str, port: int, path: str, headers: Mapping[str, str]
) -> bytes:
    """The request head up to the Content-Length value; ``head_with_length`` completes it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


def head_with_length(prefix: bytes, body: bytes) -> bytes:
    return prefix + b"%d\r\n\r\n" % len(body)


class Connection:
    """One keep-alive connection; ``request`` reopens it if the last exchange closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        # asyncio sets TCP_NODELAY on its TCP transports, so small requests leave at once.
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, head: bytes, body: bytes = b"") -> Response:
        if self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        self._writer.write(head)
        if body:
            self._writer.write(body)
        await self._writer.drain()
        response, keep_alive = await self._read_response(self._reader)
        if not keep_alive:
            self.close()
        return response

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        raw = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw[:-4].split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(rest[:3])
        headers: dict[bytes, bytes] = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        keep_alive = headers.get(b"connection", b"").lower() != b"close" and version != b"HTTP/1.0"
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = await self._read_chunked(reader)
        elif b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
        elif status < 200 or status in (204, 304):
            body = b""
        else:
            body = (
                await reader.read()
            )  # delimited by the server closing; the caller's timeout bounds it
            keep_alive = False
        return Response(status, headers, body), keep_alive

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Optional trailers, then the empty line that ends the message.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(parts)
            chunk = await reader.readexactly(size + 2)
            parts.append(chunk[:-2])
