"""Benchmark clients on plain sockets: an HTTP/1.1 answer and a WebSocket to the node's /ws.

The benchmarks' clients stand in for clients on other machines, so they should cost this one as
little as they can: the node, PostgreSQL and Redis share its cores with them. A trio-websocket
client (wsproto) took ~90 us of CPU a message here, so 1,000 of them reading 10,000 messages a
second took most of a core away from the node; and httpx took 0.7-0.8 ms to build and write one
request. These read the node's frames (unmasked, unfragmented text: all it sends) and write the
client's (masked) themselves, and time a message by when its bytes were read.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

import trio


def address(url: str) -> tuple[str, int]:
    """The host and port of the node's http:// url."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class Closed(Exception):
    """The node closed the connection, or sent a close frame."""


async def more(stream: trio.SocketStream) -> bytes:
    """The next bytes the node sent; Closed at the end of the connection."""
    if not (chunk := await stream.receive_some(65536)):
        raise Closed("the node closed the connection")
    return chunk


async def read_answer(http: trio.SocketStream) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length (as the node gives them): its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await more(http)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(rest) < length:
        rest += await more(http)
    return int(lines[0].split()[1]), rest[:length]


class Feed:
    """A WebSocket to /ws: JSON messages out, and in with the time their bytes were read."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.read_at = 0.0  # perf_counter when the buffer's last bytes were read

    @classmethod
    async def open(cls, host: str, port: int) -> Feed:
        """Connected, upgraded, and past the node's CONNECTED message."""
        stream = await trio.open_tcp_stream(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all((
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())
        feed = cls(stream)
        while b"\r\n\r\n" not in feed.buffer:
            feed.buffer += await more(stream)
        head, _, feed.buffer = feed.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            await stream.aclose()
            raise RuntimeError(f"/ws answered {head[:60]!r}")
        await feed.receive()  # CONNECTED
        return feed

    async def __aenter__(self) -> Feed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def send(self, message: dict[str, str]) -> None:
        data, mask = json.dumps(message).encode(), os.urandom(4)
        assert len(data) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        await self.stream.send_all(bytes((0x81, 0x80 | len(data))) + mask + masked)

    async def receive(self) -> list[dict[str, Any]]:
        """The messages whole in what has been read (waiting for one if there is none); their
        last bytes were read at `read_at`."""
        while True:
            texts, self.buffer = frames(self.buffer)
            if texts:
                return [json.loads(text) for text in texts]
            self.buffer += await more(self.stream)
            self.read_at = time.perf_counter()


def frames(data: bytes) -> tuple[list[str], bytes]:
    """The whole text frames at the start of data (unmasked, as a server sends), and the rest;
    Closed at a close frame."""
    texts = []
    while len(data) >= 2:
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + size:
            break
        opcode = data[0] & 0x0F
        if opcode == 0x8:
            raise Closed("the node sent a close frame")
        if opcode == 0x1:
            texts.append(data[start : start + size].decode())
        data = data[start + size :]
    return texts, data
