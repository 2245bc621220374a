"""The node's budget for request bodies in flight, and the ASGI gate in front of the app that
keeps to it.

quart buffers a request's body as it arrives, whether or not its handler reads it, so a node's
memory grows with the bodies in flight. The gate lets a request that carries a body reach the
app only once its size is reserved: at most CONVEYOR_BODY_BUDGET_BYTES for the whole node, and a
quarter of that for one tenant. A request that cannot get its share within WAIT_S is answered
503 with Retry-After, its body discarded unread; so is one whose credentials are missing or
wrong (401), before any of its body is kept. Requests without a body pass straight through.

A refused body is read to its end and discarded before the answer goes out: hypercorn cannot
finish a response while the unread body fills its queue, and the connection would hang with
its client waiting to finish sending (quart reads the bodies it is given while it answers).

An answer that goes out before its request has been read to the end says `Connection: close`.
hypercorn keeps a connection alive only if it has parsed the whole request by the time the
response ends; otherwise it closes the connection after a response that did not say so, and a
client that sends its next request on it sees it dropped unanswered (seen: 1 run in 5 of 300
early 400s to GETs with a body). The answer first waits SETTLE_S for the end of a request that
is arriving, so a kept-alive connection stays open in the usual case.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from ..auth import Authenticator, Unauthorized
from ..failures import StoreUnavailable
from ..metrics import Metrics
from .errors import error_body

WAIT_S = 5.0
DRAIN_S = 10.0  # how long the rest of a body that was answered without it may take to arrive
SETTLE_S = 0.05  # how long an answer waits for the end of its request before it closes instead
PRINCIPAL = "conveyor.principal"  # the ASGI scope key under which the gate leaves the caller

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Any  # quart's app; hypercorn's ASGI types are stricter than this module needs


@attrs.frozen
class BudgetStatistics:
    total: int
    used: int
    waiting: int


@attrs.define(eq=False)
class _Waiter:
    owner: str
    size: int
    event: trio.Event = attrs.Factory(trio.Event)
    granted: bool = False


class ByteBudget:
    """Bytes reserved by owners, within a total and a share per owner. Waiters are served in
    order, except that one held back only by its owner's share does not hold up the others."""

    def __init__(self, total: int, per_owner: int) -> None:
        self.total = total
        self.per_owner = min(per_owner, total)
        self.used = 0
        self._held: dict[str, int] = {}
        self._waiters: deque[_Waiter] = deque()

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(self.total, self.used, len(self._waiters))

    def _share_allows(self, owner: str, size: int) -> bool:
        return self._held.get(owner, 0) + size <= self.per_owner

    def _fits(self, owner: str, size: int) -> bool:
        return self.used + size <= self.total and self._share_allows(owner, size)

    def _grant(self, owner: str, size: int) -> None:
        self.used += size
        self._held[owner] = self._held.get(owner, 0) + size

    async def take(self, owner: str, size: int) -> int:
        """Reserve up to `size` bytes (never more than one share) for owner; returns what was
        reserved, for `give`. Callers bound the wait with a cancel scope."""
        size = min(size, self.per_owner)
        # a waiter that its share allows is waiting for room in the total: queue behind it
        ahead = any(self._share_allows(w.owner, w.size) for w in self._waiters)
        if not ahead and self._fits(owner, size):
            self._grant(owner, size)
            return size
        waiter = _Waiter(owner, size)
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.give(owner, size)
            else:
                self._waiters.remove(waiter)
            raise
        return size

    def give(self, owner: str, size: int) -> None:
        self.used -= size
        left = self._held.get(owner, 0) - size
        if left > 0:
            self._held[owner] = left
        else:
            self._held.pop(owner, None)
        for waiter in list(self._waiters):
            if self._fits(waiter.owner, waiter.size):
                self._waiters.remove(waiter)
                self._grant(waiter.owner, waiter.size)
                waiter.granted = True
                waiter.event.set()
            elif self._share_allows(waiter.owner, waiter.size):
                break  # first in line for room in the total: nobody overtakes it


def authorization_of(scope: Mapping[str, Any]) -> str | None:
    """The request's Authorization header (None: it has none). More than one is refused
    (Unauthorized): they may name two tenants, and which one counts would be a guess."""
    found = [value for name, value in scope.get("headers", ()) if name == b"authorization"]
    if len(found) > 1:
        raise Unauthorized("send one Authorization header, not several")
    return found[0].decode("latin-1") if found else None


def declared_body(scope: Scope) -> tuple[bool, int | None]:
    """Whether the request carries a body, and its declared length (None: chunked, or a
    Content-Length that is not a number; also None without one, when there is no body)."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return True, None
        elif name == b"transfer-encoding":
            chunked = True
    return chunked or bool(length), length


class _Body:
    """The request's receive channel as the app sees it: it remembers whether the body was read
    to its end, and it never hands the app http.disconnect.

    quart-trio cancels a request's tasks when it hears http.disconnect, and hypercorn sends that
    while the app's task is still running hypercorn's own code to finish the response; a cancel
    there can leave a kept-alive connection half closed, never answering again (seen: 2 requests
    in 300 with a bad query and a body). The app learns of nothing it needs: it answers, and its
    answer to a client that left is dropped by hypercorn."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._ended = trio.Event()  # the body was read to its end, or the client went away

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.done:
                await trio.sleep_forever()  # the app's reader waits until the app is done
            message = await self._receive()
            if message["type"] != "http.request":
                self._ended.set()  # the client went away: nothing more will come
                continue
            if not message.get("more_body", False):
                self._ended.set()
            return message

    async def drain(self) -> None:
        """Read and discard what is left of the body (bounded in time)."""
        with trio.move_on_after(DRAIN_S):
            while not self.done:
                message = await self._receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    self._ended.set()

    def answer(self, send: Send) -> Send:
        """`send` for the app: a response that starts before the request was read to its end
        (the app reads it meanwhile) waits SETTLE_S for that end, and says Connection: close
        if it has not come."""

        async def answer(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and not self.done:
                with trio.move_on_after(SETTLE_S):
                    await self._ended.wait()
                if not self.done:
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        return answer


async def _refuse(
    send: Send, body: _Body, status: int, error: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Answer without the app: discard the body, then send the JSON error (both bounded in
    time, so that a client that stops sending cannot keep this task)."""
    await body.drain()
    data = error_body(error).encode()
    with trio.move_on_after(DRAIN_S):
        await send_json(send, status, data, [(b"connection", b"close"), *headers])


async def send_json(send: Send, status: int, data: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A whole JSON answer, as the app's answers are: Content-Type, length and the CORS header."""
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"access-control-allow-origin", b"*"),
            *headers,
        ],
    })
    await send({"type": "http.response.body", "body": data, "more_body": False})


class BodyGate:
    """ASGI middleware: authenticates requests that carry a body and reserves their size in the
    budget before the app (and quart's buffering) sees them."""

    def __init__(
        self, app: ASGIApp, budget: ByteBudget, auth: Authenticator, metrics: Metrics, max_body: int
    ) -> None:
        self.app = app
        self.budget = budget
        self.auth = auth
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body = _Body(receive)
        has_body, length = declared_body(scope)
        if not has_body:
            return await self.app(scope, body.receive, body.answer(send))
        if length is not None and length > self.max_body:
            # more than the limit: quart answers 413 and keeps none of it; the rest is discarded
            await self.app(scope, body.receive, body.answer(send))
            return await body.drain()
        owner = await self._owner(scope, body, send)
        if owner is None:
            return None
        reserved = 0
        with trio.move_on_after(WAIT_S):
            reserved = await self.budget.take(owner, length if length is not None else self.max_body)
        if not reserved:
            self.metrics.inc("conveyor_body_budget_refused_total")
            return await _refuse(
                send, body, 503, "Service busy: too many request bodies in flight on this node, try again",
                [(b"retry-after", b"1")],
            )
        try:
            await self.app(scope, body.receive, body.answer(send))
        finally:
            self.budget.give(owner, reserved)
        await body.drain()

    async def _owner(self, scope: Scope, body: _Body, send: Send) -> str | None:
        """Whose share the body counts against: the caller's tenant (authenticated here, and
        left in the scope for the app), or None once the request was answered."""
        path = scope.get("path", "")
        if not self.auth.enabled or path == "/admin" or path.startswith("/admin/"):
            return "*" if not self.auth.enabled else "admin"  # the admin guard checks its key
        try:
            principal = await self.auth.from_header(authorization_of(scope))
        except Unauthorized as exc:
            self.metrics.inc("conveyor_auth_failures_total")
            await _refuse(send, body, 401, f"Unauthorized: {exc}",
                          [(b"www-authenticate", b'Bearer realm="conveyor"')])
            return None
        except StoreUnavailable:
            await _refuse(send, body, 503, "Storage unavailable, try again later", [(b"retry-after", b"1")])
            return None
        scope[PRINCIPAL] = principal
        return str(principal.tenant)
