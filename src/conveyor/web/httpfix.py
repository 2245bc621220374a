"""An HTTP/1.1 answer goes out in one write: its head with the first part of its body.

hypercorn sends a response's head as soon as the app starts the response, and its body with the
next event: two writes to the socket for every answer, and a client woken twice (on this 2-core
machine a write that wakes the peer is most of a small request's cost: a third of the node's
samples under a stream of `GET /jobs/{id}/events`). `install` makes hypercorn's HTTP/1.1
protocol hold the head of a final response (status 200 or more) and write it with the next
event it sends on that connection: the body, its end, or anything else. Informational answers
(a WebSocket's 101) go out at once, as before. A streamed body's head waits for its first chunk.
"""

from __future__ import annotations

from typing import Any

import h11
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, InformationalResponse, Response
from hypercorn.protocol.h11 import H11Protocol

_installed = False
_HEAD = "_conveyor_head"  # the held head's bytes, on the protocol object


def install() -> None:
    global _installed
    if _installed:
        return

    async def send_h11_event(self: Any, event: Any) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            data = None
        head = getattr(self, _HEAD, None)
        if isinstance(event, h11.Response) and data is not None:
            setattr(self, _HEAD, (head or b"") + data)
            return
        if head is not None:
            setattr(self, _HEAD, None)
            data = head + (data or b"")
        if data is not None:
            await self.send(RawData(data=data))

    original_stream_send = H11Protocol.stream_send

    async def stream_send(self: Any, event: Any) -> None:
        head = getattr(self, _HEAD, None)
        if head is not None and not _goes_through_h11(event):
            setattr(self, _HEAD, None)  # a raw write (a WebSocket's data) or an end: head first
            await self.send(RawData(data=head))
        await original_stream_send(self, event)

    H11Protocol._send_h11_event = send_h11_event  # type: ignore[method-assign]
    H11Protocol.stream_send = stream_send  # type: ignore[method-assign]
    _installed = True


def _goes_through_h11(event: Any) -> bool:
    return isinstance(event, Response | Body | EndBody | InformationalResponse)
