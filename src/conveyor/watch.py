"""`conveyor watch`: tail a tenant's feed in the terminal, resuming across reconnects.

It subscribes with the last eventId it printed, so a dropped connection, a node restart or a
drain behind nginx loses nothing: on reconnecting it receives what it missed, in order. It
answers the node's PINGs and sends its own; a socket that stays silent for three of its ping
intervals is taken for dead and replaced. A RESYNC (the missed events are no longer kept) is
reported on stderr and the tail goes on from the feed's newest event. Bad credentials end it
(exit 1); anything else is retried with a growing delay.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

UNAUTHENTICATED = 4401


NEEDS_KEY = "this node needs an API key: set CONVEYOR_API_KEY (conveyor keys create --tenant T makes one)"


class WatchRefused(Exception):
    """The node refused our credentials or request: retrying would not help."""


class OutputClosed(Exception):
    """Whoever reads our output went away (`conveyor watch | head`): the watch is over."""


def ws_url(base: str) -> str:
    base = base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws"
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + "/ws"
    return base if base.endswith("/ws") else base + "/ws"


def line_of(msg: dict[str, Any]) -> str:
    """One event as a terminal line."""
    kind = msg.get("type")
    head = f"{msg.get('eventId', '-'):>17}  {msg.get('jobId', '-')}"
    if kind == "JOB_UPDATE":
        tail = f"{msg.get('status')}  attempt {msg.get('attempts')}/{msg.get('maxAttempts')}"
        if msg.get("error"):
            tail += f"  error: {msg['error']}"
        return f"{head}  {tail}"
    if kind == "JOB_PROGRESS":
        return f"{head}  PROGRESS {msg.get('progress'):.0f}%  {msg.get('message', '')}"
    return f"{head}  {json.dumps(msg)}"


class Watcher:
    def __init__(
        self,
        url: str,
        *,
        tenant: str | None,
        api_key: str | None,
        after: str | None,
        as_json: bool,
        out: TextIO,
        err: TextIO,
        ping_s: float = 15.0,
    ) -> None:
        self.url = ws_url(url)
        self.tenant = tenant
        self.api_key = api_key
        self.last = after
        self.as_json = as_json
        self.out, self.err = out, err
        self.ping_s = ping_s
        self.subscribed = False

    def note(self, text: str) -> None:
        print(f"conveyor watch: {text}", file=self.err, flush=True)

    async def run(self) -> None:
        delay = 0.5
        while True:
            self.subscribed = False
            try:
                await self._session()  # ends only by an exception
            except ConnectionRejected as exc:
                if exc.status_code == 401 and not self.api_key:
                    raise WatchRefused(NEEDS_KEY) from None
                if exc.status_code in (401, 403):
                    raise WatchRefused(f"the node refused the connection ({exc.status_code})") from None
                self.note(f"connection refused ({exc.status_code}); retrying in {delay:.1f}s")
            except (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError) as exc:
                if self.subscribed:  # it worked for a while: start the backoff again
                    delay = 0.5
                self.note(f"disconnected ({_why(exc)}); reconnecting in {delay:.1f}s")
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _session(self) -> None:
        headers = [(b"Authorization", f"Bearer {self.api_key}".encode())] if self.api_key else None
        async with open_websocket_url(self.url, extra_headers=headers) as ws:
            connected = await self._receive(ws)
            if connected.get("type") != "CONNECTED":
                raise WatchRefused(f"unexpected first message: {connected}")
            tenant = self.tenant or connected.get("tenantId")
            if tenant is None:
                raise WatchRefused("auth is off on this node: name the tenant with --tenant")
            subscribe: dict[str, Any] = {"type": "SUBSCRIBE", "tenantId": tenant}
            if self.last is not None:
                subscribe["lastEventId"] = self.last
            await ws.send_message(json.dumps(subscribe))
            while True:
                msg = await self._receive(ws)
                self._handle(msg, tenant)
                if msg.get("type") == "PING":
                    await ws.send_message(json.dumps({"type": "PONG"}))

    async def _receive(self, ws: WebSocketConnection) -> dict[str, Any]:
        """The next message; sends our PING every ping interval while waiting, and gives up
        (TooSlowError) after three intervals without a message."""
        give_up = trio.current_time() + 3 * self.ping_s
        while True:
            with trio.move_on_after(self.ping_s) as waited:
                try:
                    raw = await ws.get_message()
                except ConnectionClosed as exc:
                    if exc.reason is not None and exc.reason.code == UNAUTHENTICATED:
                        if not self.api_key:  # the node waited for an AUTH we had no key for
                            raise WatchRefused(NEEDS_KEY) from None
                        raise WatchRefused(f"unauthenticated: {exc.reason.reason}") from None
                    raise
            if not waited.cancelled_caught:
                break
            if trio.current_time() >= give_up:
                raise trio.TooSlowError
            await ws.send_message(json.dumps({"type": "PING"}))
        msg = json.loads(raw)
        return msg if isinstance(msg, dict) else {"type": "?", "raw": msg}

    def _handle(self, msg: dict[str, Any], tenant: str) -> None:
        kind = msg.get("type")
        if kind == "SUBSCRIBED":
            self.subscribed = True
            resumed = f", resuming after {self.last}" if msg.get("resumed") else ""
            self.note(f"watching tenant {tenant}{resumed}")
            if self.last is None:
                self.last = msg.get("lastEventId")
        elif kind == "RESYNC":
            self.note(f"events after {self.last} are no longer kept; going on from the newest")
            self.last = msg.get("lastEventId")
        elif kind == "ERROR":
            raise WatchRefused(str(msg.get("error")))
        elif "eventId" in msg:
            self.last = msg["eventId"]
            try:
                print(json.dumps(msg) if self.as_json else line_of(msg), file=self.out, flush=True)
            except BrokenPipeError:
                raise OutputClosed from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        return f"{exc.reason.code} {exc.reason.reason or ''}".strip()
    if isinstance(exc, trio.TooSlowError):
        return "silent for three ping intervals"
    if isinstance(exc, HandshakeError):  # it wraps what went wrong: no node there, most often
        cause = exc.__cause__ or exc.__context__
        return f"no node answers: {cause}" if cause is not None else "the WebSocket handshake failed"
    return str(exc) or type(exc).__name__


def main(url: str, tenant: str | None, after: str | None, as_json: bool, api_key: str | None) -> int:
    watcher = Watcher(
        url, tenant=tenant, api_key=api_key, after=after, as_json=as_json,
        out=sys.stdout, err=sys.stderr,
    )
    try:
        trio.run(watcher.run)
    except KeyboardInterrupt:
        return 0
    except OutputClosed:
        # nobody reads: point stdout at /dev/null so that the interpreter's last flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except WatchRefused as exc:
        watcher.note(str(exc))
        return 1
    return 0
