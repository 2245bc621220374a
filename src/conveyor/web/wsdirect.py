"""Feed messages written straight to a WebSocket's socket, past the layers a message crosses.

A message sent with `websocket.send` crosses quart (a signal per message), the ASGI send of our
middlewares, hypercorn's stream (wsproto frames it), its protocol and its server, which takes a
lock and enters a shielded cancel scope around `send_all`: about 35 % of a node's CPU in the
fan-out benchmark, where the socket's own `send` was 19 %. A server's text frame is a header and
the UTF-8 text (servers do not mask), so `DirectSender` frames it itself and writes it with one
non-blocking `send` on the connection's socket (messages queued together: their frames in one
`send`), when hypercorn's objects are the ones it knows (its HTTP/1.1 server on trio), the
connection is open and nothing else is being sent on it. The rest (a frame the socket took only
in part, a connection another send holds, anything it does not recognise) goes the way hypercorn
sends, so order and hypercorn's own sends (pings, the close) are kept. A permessage-deflate
connection may receive uncompressed messages (RFC 7692, section 6: RSV1 clear).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.connection import ConnectionState

SCOPE_KEY = "conveyor.websocket_send"  # the server's own ASGI send, put in the scope by KeepSend


def frame(text: str) -> bytes:
    """A final, unmasked text frame of text (RFC 6455, section 5.2)."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class KeepSend:
    """ASGI middleware, outermost: a WebSocket's scope carries the server's own send."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[SCOPE_KEY] = send
        await self.app(scope, receive, send)


class DirectSender:
    """Sends one connection's text messages; `fallback` is the ordinary way (websocket.send)."""

    def __init__(self, raw_send: Any, fallback: Callable[[str], Awaitable[None]]) -> None:
        self._fallback = fallback
        self._stream: WSStream | None = None
        self._server: Any = None
        stream = getattr(raw_send, "__self__", None)
        protocol = getattr(getattr(stream, "send", None), "__self__", None)
        server = getattr(getattr(protocol, "send", None), "__self__", None)
        if (
            isinstance(stream, WSStream)
            and type(protocol).__name__ == "H11Protocol"
            and type(server).__module__ == "hypercorn.trio.tcp_server"
            and hasattr(server, "send_lock")
            and hasattr(server, "stream")
        ):
            self._stream, self._server = stream, server

    @property
    def direct(self) -> bool:
        """Whether this connection's messages can skip the layers."""
        return self._server is not None

    async def send(self, text: str) -> None:
        await self.send_many((text,))

    async def send_many(self, texts: Sequence[str]) -> None:
        """Sends the texts in order: their frames in one write when the direct way is open."""
        stream, server = self._stream, self._server
        if (
            stream is None
            or stream.closed
            or stream.state is not ASGIWebsocketState.CONNECTED
            or stream.connection.state is not ConnectionState.OPEN
            or server.send_lock.locked()
        ):
            await self._send_each(texts)
            return
        data = b"".join(map(frame, texts))
        try:
            sent = os.write(server.stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:
            await self._send_each(texts)  # the socket is gone: hypercorn finds out and closes
            return
        if sent < len(data):
            # the rest, hypercorn's way and in its order; shielded, as hypercorn shields its own
            # writes: a frame cut off by a cancellation would garble everything after it
            with trio.CancelScope(shield=True):
                await stream.send(Data(stream_id=stream.stream_id, data=data[sent:]))

    async def _send_each(self, texts: Sequence[str]) -> None:
        for text in texts:
            await self._fallback(text)
