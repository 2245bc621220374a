"""A WebSocket that breaks the protocol is closed with a close code, not dropped.

wsproto turns a frame it cannot accept (text that is not UTF-8: 1007; a malformed frame, an
unknown opcode, an unmasked client frame: 1002) into a CloseConnection event but leaves the
connection OPEN, and hypercorn answers a close only in REMOTE_CLOSING: so such a client saw its
TCP connection dropped with no reason. `install` marks those locally failed connections as
REMOTE_CLOSING when wsproto yields the event, so that hypercorn sends the close frame with
wsproto's code and reason, as RFC 6455 section 7.1.7 describes. tests/integration/test_hostile.py
checks the codes, so an upgrade that changes this is noticed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    original = Connection.events

    def events(self: Connection) -> Generator[Event, None, None]:
        for event in original(self):
            if isinstance(event, CloseConnection) and self.state is ConnectionState.OPEN:
                # wsproto failed the connection itself (its ParseFailed): answer with that code
                conn: Any = self
                conn._state = ConnectionState.REMOTE_CLOSING
            yield event

    Connection.events = events  # type: ignore[method-assign]
    _installed = True
