"""The WebSocket feed at /ws, the reference's protocol.

Server → client: CONNECTED on open, JOB_UPDATE per status change of a subscribed tenant's job,
SUBSCRIBED / UNSUBSCRIBED acknowledgements, ERROR for a bad message (the socket stays open).
Client → server: SUBSCRIBE {tenantId}, UNSUBSCRIBE {tenantId}, PING.
Each connection sends from a bounded queue; a client that stops reading is closed (1008), and a
draining node closes every socket with 1001.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from quart import websocket
from quart_trio import QuartTrio

from ..actors.broadcaster import Subscriber
from ..node import Node

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100
CLOSE_TIMEOUT_S = 2.0


def _message(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields})


def register(app: QuartTrio, node: Node) -> None:
    @app.websocket("/ws")
    async def feed() -> None:
        await websocket.accept()
        close: dict[str, Any] = {"code": 1000, "reason": ""}
        tenants: set[str] = set()
        node.hub.connections += 1
        with trio.CancelScope() as scope:

            def stop(code: int, reason: str) -> None:
                close.update(code=code, reason=reason)
                scope.cancel()

            sub = Subscriber(
                node.config.ws_send_queue,
                lambda: stop(1008, "send queue full: client is not reading fast enough"),
            )
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, sub)
                    nursery.start_soon(_close_on_drain, node, stop)
                    sub.offer(_message("CONNECTED", message="Connected to job updates"))
                    while True:
                        raw = await websocket.receive()
                        reply = _handle(raw, node, sub, tenants)
                        if reply is not None:
                            sub.offer(reply)
            finally:
                node.hub.connections -= 1
                for tenant in tenants:
                    node.hub.unsubscribe(tenant, sub)
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await websocket.close(close["code"], close["reason"])


async def _pump(sub: Subscriber) -> None:
    async with sub.receive:
        async for message in sub.receive:
            await websocket.send(message)


async def _close_on_drain(node: Node, stop: Any) -> None:
    await node.draining.wait()
    stop(1001, "node is shutting down")


def _handle(raw: str | bytes, node: Node, sub: Subscriber, tenants: set[str]) -> str | None:
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return _message("ERROR", error="message is not valid JSON")
    if not isinstance(msg, dict):
        return _message("ERROR", error="message must be a JSON object with a type")
    kind = msg.get("type")
    if kind == "PING":
        return _message("PONG")
    if kind in ("SUBSCRIBE", "UNSUBSCRIBE"):
        tenant = msg.get("tenantId")
        if not isinstance(tenant, str) or not 1 <= len(tenant) <= 100:
            return _message("ERROR", error=f"{kind} needs a tenantId of 1-100 characters")
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
