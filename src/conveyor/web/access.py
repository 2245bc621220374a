"""The access log: one line per HTTP request and per WebSocket, on the logger conveyor.access
(CONVEYOR_ACCESS_LOG=off turns it off), in the node's log format:

    127.0.0.1:52114 "POST /jobs HTTP/1.1" 201 51 3.2ms
    127.0.0.1:52120 "WS /ws" 101 0 5012.7ms        (a WebSocket: its whole life)

The path is logged as it was sent (percent-encoded, so a client cannot write a newline or a
forged line into the log) and without its query string, which may carry a WebSocket ticket.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .bodies import ASGIApp, Receive, Scope, Send

log = logging.getLogger("conveyor.access")


class AccessLog:
    """ASGI middleware that logs each request once it is over (answered, failed or cancelled)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        began = trio.current_time()
        seen: dict[str, Any] = {"status": "-", "bytes": 0}

        async def watched(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                seen["status"] = message["status"]
            elif kind in ("http.response.body", "websocket.http.response.body"):
                seen["bytes"] += len(message.get("body", b""))
            elif kind == "websocket.accept":
                seen["status"] = 101
            elif kind == "websocket.close" and seen["status"] == "-":
                seen["status"] = 403  # refused before the handshake was accepted
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            log.info("%s %s %s %s %.1fms", _client(scope), _request(scope), seen["status"], seen["bytes"],
                     (trio.current_time() - began) * 1000)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _request(scope: Scope) -> str:
    path = _path(scope)
    if scope["type"] == "websocket":
        return f'"WS {path}"'
    return f'"{scope.get("method", "?")} {path} HTTP/{scope.get("http_version", "1.1")}"'


def _path(scope: Scope) -> str:
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogatepass")
    text = raw.split(b"?", 1)[0].decode("ascii", "backslashreplace")
    return "".join(c if " " < c < "\x7f" and c not in '"\\' else f"\\x{ord(c):02x}" for c in text)
