"""The WebSocket feed at /ws: the reference's protocol, behind authentication.

Server → client: CONNECTED once the socket is authenticated, JOB_UPDATE per status change of a
subscribed tenant's job, SUBSCRIBED / UNSUBSCRIBED acknowledgements, PONG, ERROR for a bad
message (the socket stays open).
Client → server: AUTH {apiKey} (first message, when the upgrade carried no credentials),
SUBSCRIBE {tenantId}, UNSUBSCRIBE {tenantId}, PING.

Authentication, when on, is one of: the upgrade's `Authorization: Bearer <key>` header; a
single-use ticket from POST /ws/tickets in the query string (`/ws?ticket=...`, for browsers);
or an AUTH message within AUTH_TIMEOUT_S of the upgrade. Nothing is sent before it succeeds, and a
socket may subscribe to its own tenant only. Refusals before the upgrade are HTTP answers (403
bad Origin, 401 bad credentials, 429 too many sockets); after it, close codes: 4401 not
authenticated or key revoked, 1013 too many sockets, 1008 too slow, 1009 frame too big, 1001
node draining. With auth off (loopback only), the reference's unauthenticated protocol.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from quart import Response, websocket
from quart_trio import QuartTrio

from .. import keys
from ..actors.broadcaster import Connection, Subscriber
from ..auth import Principal, Unauthorized
from ..node import Node
from ..stores import StoreUnavailable

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100
CLOSE_TIMEOUT_S = 2.0
AUTH_TIMEOUT_S = 5.0
TICKET_TTL_MS = 30_000
UNAUTHENTICATED = 4401
TRY_AGAIN_LATER = 1013


def _message(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields})


def _refuse(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status=status, mimetype="application/json")


class _Closer:
    """Ends a connection from anywhere (drain, revocation, lag) with a close code and reason."""

    def __init__(self) -> None:
        self.code, self.reason = 1000, ""
        self.scope = trio.CancelScope()

    def __call__(self, code: int, reason: str) -> None:
        if not self.scope.cancel_called:
            self.code, self.reason = code, reason
            self.scope.cancel()


def register(app: QuartTrio, node: Node) -> None:
    config = node.config

    @app.websocket("/ws")
    async def feed() -> Response | None:
        origin = websocket.headers.get("Origin")
        if config.ws_origins and origin is not None and origin.rstrip("/") not in config.ws_origins:
            return _refuse(403, f"origin {origin} is not allowed")
        closer = _Closer()
        try:
            who = await _upgrade_credentials(node)
        except Unauthorized as exc:
            node.metrics.inc("conveyor_auth_failures_total")
            return _refuse(401, f"Unauthorized: {exc}")
        except StoreUnavailable:
            return _refuse(503, "Storage unavailable, try again later")
        if who is not None and _over_cap(node, who):
            return _refuse(429, f"tenant {who.tenant} has too many open WebSockets")
        conn = Connection(None, None, closer)
        if who is not None:
            conn = Connection(who.tenant, who.key_id, closer)
            node.hub.attach(conn)  # counted before the first await, so the cap holds
        try:
            await websocket.accept()
            if who is None:
                who = await _auth_message(node, closer)
                if who is not None and _over_cap(node, who):
                    closer(TRY_AGAIN_LATER, "too many open WebSockets for this tenant")
                elif who is not None:
                    conn = Connection(who.tenant, who.key_id, closer)
                    node.hub.attach(conn)
            if who is not None and not closer.scope.cancel_called:
                await _serve(node, who, closer)
        finally:
            node.hub.detach(conn)
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await websocket.close(closer.code, closer.reason)
        return None


def _over_cap(node: Node, who: Principal) -> bool:
    if who.tenant is None:
        return False
    cap = node.limits.of(who.tenant).max_websockets
    return cap > 0 and node.hub.open_for(who.tenant) >= cap


async def _upgrade_credentials(node: Node) -> Principal | None:
    """Credentials carried by the upgrade request; None when the client must send AUTH."""
    if not node.auth.enabled:
        return Principal(None)
    header = websocket.headers.get("Authorization")
    if header:
        key = keys.bearer(header)
        if key is None:
            raise Unauthorized("the Authorization header must read 'Bearer <key>'")
        return await node.auth.authenticate(key)
    ticket = websocket.args.get("ticket")
    if ticket is not None:
        return await _redeem(node, ticket)
    return None


async def _redeem(node: Node, ticket: str) -> Principal:
    value = await node.redis.take_ticket(keys.digest(ticket)) if len(ticket) <= 128 else None
    if not value:
        raise Unauthorized("invalid, expired or already used ticket")
    tenant, _, key_id = value.partition(" ")
    if await node.auth.active_tenant(key_id) != tenant:
        raise Unauthorized("the key that issued this ticket was revoked")
    return Principal(tenant, key_id)


async def _auth_message(node: Node, closer: _Closer) -> Principal | None:
    """Wait for the AUTH message; on failure close the socket (4401) and return None."""
    reason = "authentication timed out: send AUTH {apiKey} first"
    with trio.move_on_after(AUTH_TIMEOUT_S):
        raw = await websocket.receive()
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            msg = None
        if not isinstance(msg, dict) or msg.get("type") != "AUTH":
            reason = "authenticate first: send AUTH {apiKey}"
        elif not isinstance(msg.get("apiKey"), str):
            reason = "AUTH needs an apiKey string"
        else:
            try:
                return await node.auth.authenticate(msg["apiKey"])
            except Unauthorized as exc:
                reason = str(exc)
            except StoreUnavailable:
                closer(TRY_AGAIN_LATER, "storage unavailable, try again later")
                return None
    node.metrics.inc("conveyor_auth_failures_total")
    closer(UNAUTHENTICATED, reason)
    return None


async def _serve(node: Node, who: Principal, closer: _Closer) -> None:
    tenants: set[str] = set()
    with closer.scope:
        sub = Subscriber(
            node.config.ws_send_queue,
            lambda: closer(1008, "send queue full: client is not reading fast enough"),
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, sub)
                nursery.start_soon(_close_on_drain, node, closer)
                connected: dict[str, Any] = {"message": "Connected to job updates"}
                if who.tenant is not None:
                    connected["tenantId"] = who.tenant
                sub.offer(_message("CONNECTED", **connected))
                while True:
                    raw = await websocket.receive()
                    reply = _handle(raw, node, who, sub, tenants)
                    if reply is not None:
                        sub.offer(reply)
        finally:
            for tenant in tenants:
                node.hub.unsubscribe(tenant, sub)


async def _pump(sub: Subscriber) -> None:
    async with sub.receive:
        async for message in sub.receive:
            await websocket.send(message)


async def _close_on_drain(node: Node, closer: _Closer) -> None:
    await node.draining.wait()
    closer(1001, "node is shutting down")


def _handle(
    raw: str | bytes, node: Node, who: Principal, sub: Subscriber, tenants: set[str]
) -> str | None:
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return _message("ERROR", error="message is not valid JSON")
    if not isinstance(msg, dict):
        return _message("ERROR", error="message must be a JSON object with a type")
    kind = msg.get("type")
    if kind == "PING":
        return _message("PONG")
    if kind == "AUTH":
        return _message("ERROR", error="already authenticated")
    if kind in ("SUBSCRIBE", "UNSUBSCRIBE"):
        tenant = msg.get("tenantId", who.tenant)
        if not isinstance(tenant, str) or not 1 <= len(tenant) <= 100:
            return _message("ERROR", error=f"{kind} needs a tenantId of 1-100 characters")
        if who.tenant is not None and tenant != who.tenant:
            return _message(
                "ERROR", error=f"forbidden: this connection may subscribe to tenant {who.tenant} only"
            )
        if kind == "UNSUBSCRIBE":
            tenants.discard(tenant)
            node.hub.unsubscribe(tenant, sub)
            return _message("UNSUBSCRIBED", tenantId=tenant)
        if tenant not in tenants and len(tenants) >= MAX_SUBSCRIPTIONS:
            return _message("ERROR", error=f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        tenants.add(tenant)
        node.hub.subscribe(tenant, sub)
        return _message("SUBSCRIBED", tenantId=tenant)
    return _message(
        "ERROR", error=f"unknown message type {kind!r}; expected SUBSCRIBE, UNSUBSCRIBE or PING"
    )
