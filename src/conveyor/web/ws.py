"""The WebSocket feed at /ws: the reference's protocol, behind authentication.

Server → client: CONNECTED once the socket is authenticated, JOB_UPDATE per status change of a
subscribed tenant's job and JOB_PROGRESS per progress report (each with its eventId), SUBSCRIBED
{lastEventId} / UNSUBSCRIBED acknowledgements, RESYNC when a resume is impossible, PING every
CONVEYOR_WS_PING_SECONDS, PONG, ERROR for a bad message (the socket stays open).
Client → server: AUTH {apiKey} (first message, when the upgrade carried no credentials),
SUBSCRIBE {tenantId, lastEventId?} (with lastEventId: every event after it first, then live;
feed.py has the rules), UNSUBSCRIBE {tenantId}, PING, PONG.

Authentication, when on, is one of: the upgrade's `Authorization: Bearer <key>` header; a
single-use ticket from POST /ws/tickets in the query string (`/ws?ticket=...`, for browsers);
or an AUTH message within AUTH_TIMEOUT_S of the upgrade. Nothing is sent before it succeeds, and a
socket may subscribe to its own tenant only. Refusals before the upgrade are HTTP answers (403
bad Origin, 401 bad credentials, 429 too many sockets); after it, close codes: 4401 not
authenticated or key revoked, 4408 silent past the idle timeout, 1013 too many sockets or
storage unavailable, 1008 its replies (PONG, ERROR) overflowed its queue, 1009 frame too big,
1001 node draining. A client slower than its events is not closed: while its queue is full its
events are dropped, and it catches up from the feed once it has read what it held. With auth off
(loopback only), the reference's unauthenticated protocol.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import trio
from quart import Response, websocket
from quart_trio import QuartTrio

from .. import feed, keys
from ..auth import Principal, Unauthorized
from ..failures import StoreUnavailable
from ..hub import CatchUp, Connection, FeedEvent, Subscriber
from . import wsdirect, wsfix
from .bodies import authorization_of
from .context import Services
from .errors import error

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100
CLOSE_TIMEOUT_S = 2.0
AUTH_TIMEOUT_S = 5.0
UNAUTHENTICATED = 4401
IDLE = 4408
TRY_AGAIN_LATER = 1013
CATCH_UP_PAGE = 500
SEND_BATCH = 64  # messages a connection writes at once, at most


def _message(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields})


class _Closer:
    """Ends a connection from anywhere (drain, revocation, lag) with a close code and reason."""

    def __init__(self) -> None:
        self.code, self.reason = 1000, ""
        self.scope = trio.CancelScope()

    def __call__(self, code: int, reason: str) -> None:
        if not self.scope.cancel_called:
            self.code, self.reason = code, reason
            self.scope.cancel()


def register(app: QuartTrio, svc: Services) -> None:
    config = svc.config
    wsfix.install()  # protocol errors answered with a close code (see wsfix)

    @app.websocket("/ws")
    async def feed() -> Response | None:
        origin = websocket.headers.get("Origin")
        if config.ws_origins and origin is not None and origin.rstrip("/") not in config.ws_origins:
            return error(403, f"origin {origin} is not allowed")
        closer = _Closer()
        try:
            who = await _upgrade_credentials(svc)
        except Unauthorized as exc:
            svc.metrics.inc("conveyor_auth_failures_total")
            return error(401, f"Unauthorized: {exc}")
        except StoreUnavailable:
            return error(503, "Storage unavailable, try again later")
        if who is not None and _over_cap(svc, who):
            return error(429, f"tenant {who.tenant} has too many open WebSockets")
        conn = Connection(None, None, closer)
        if who is not None:
            conn = Connection(who.tenant, who.key_id, closer)
            svc.hub.attach(conn)  # counted before the first await, so the cap holds
        try:
            await websocket.accept()
            if who is None:
                who = await _auth_message(svc, closer)
                if who is not None and _over_cap(svc, who):
                    closer(TRY_AGAIN_LATER, "too many open WebSockets for this tenant")
                elif who is not None:
                    conn = Connection(who.tenant, who.key_id, closer)
                    svc.hub.attach(conn)
            if who is not None and not closer.scope.cancel_called:
                await _serve(svc, who, closer)
        finally:
            svc.hub.detach(conn)
        svc.metrics.inc("conveyor_websocket_closed_total", code=str(closer.code))
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await websocket.close(closer.code, closer.reason)
        return None


def _over_cap(svc: Services, who: Principal) -> bool:
    if who.tenant is None:
        return False
    cap = svc.limits.of(who.tenant).max_websockets
    return cap > 0 and svc.hub.open_for(who.tenant) >= cap


async def _upgrade_credentials(svc: Services) -> Principal | None:
    """Credentials carried by the upgrade request; None when the client must send AUTH."""
    if not svc.auth.enabled:
        return Principal(None)
    header = authorization_of(websocket.scope)
    ticket = websocket.args.get("ticket")
    if header and ticket is not None:
        # two credentials that may name two tenants: which one the socket is would be a guess
        raise Unauthorized("send one credential: an Authorization header or a ticket, not both")
    if header:
        return await svc.auth.from_header(header)
    if ticket is not None:
        return await _redeem(svc, ticket)
    return None


async def _redeem(svc: Services, ticket: str) -> Principal:
    issued = await svc.jobs.redeem_ticket(ticket)
    if issued is None:
        raise Unauthorized("invalid, expired or already used ticket")
    tenant, key_id = issued
    if await svc.auth.active_tenant(key_id) != tenant:
        raise Unauthorized("the key that issued this ticket was revoked")
    return Principal(tenant, key_id)


async def _auth_message(svc: Services, closer: _Closer) -> Principal | None:
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
                return await svc.auth.authenticate(msg["apiKey"])
            except Unauthorized as exc:
                reason = str(exc)
            except StoreUnavailable:
                closer(TRY_AGAIN_LATER, "storage unavailable, try again later")
                return None
    svc.metrics.inc("conveyor_auth_failures_total")
    closer(UNAUTHENTICATED, reason)
    return None


@attrs.frozen
class _Subscribe:
    """SUBSCRIBE, in the order of the connection's queue: position a cursor (at the client's
    lastEventId, or at the feed's newest event) and acknowledge."""

    tenant: str
    after: str | None


@attrs.frozen
class _Unsubscribe:
    tenant: str


async def _serve(svc: Services, who: Principal, closer: _Closer) -> None:
    tenants: set[str] = set()
    with closer.scope:
        sub = Subscriber(
            svc.config.ws_send_queue,
            lambda: closer(1008, "send queue full: client is not reading its messages"),
        )
        heard = [trio.current_time()]  # when the client last sent anything
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, svc, sub, closer)
                nursery.start_soon(_close_on_drain, svc, closer)
                nursery.start_soon(_heartbeat, svc, sub, closer, heard)
                connected: dict[str, Any] = {"message": "Connected to job updates"}
                if who.tenant is not None:
                    connected["tenantId"] = who.tenant
                sub.offer(_message("CONNECTED", **connected))
                while True:
                    raw = await websocket.receive()
                    heard[0] = trio.current_time()
                    reply = _handle(raw, svc, who, sub, tenants)
                    if reply is not None:
                        sub.offer(reply)
        finally:
            for tenant in tenants:
                svc.hub.unsubscribe(tenant, sub)


async def _pump(svc: Services, sub: Subscriber, closer: _Closer) -> None:
    """Send the connection's queue in order; the feed's cursors live here, one per tenant.

    What is queued together goes out together: the messages taken from the queue without
    waiting (up to SEND_BATCH) are written at once, in one write where the socket takes it."""
    cursors: dict[str, feed.Cursor] = {}
    sender = wsdirect.DirectSender(websocket.scope.get(wsdirect.SCOPE_KEY), websocket.send)
    out: list[str] = []
    async with sub.receive:
        try:
            async for first in sub.receive:
                item: object = first
                while True:
                    if isinstance(item, str):
                        out.append(item)
                    elif isinstance(item, FeedEvent):
                        cursor = cursors.get(item.tenant)
                        if cursor is not None:  # else unsubscribed since
                            verdict = cursor.verdict(item.id, item.prev)
                            if verdict is feed.Verdict.SEND:
                                out.append(feed.with_id(item.id, item.data))
                                cursor.last = item.id
                            elif verdict is feed.Verdict.GAP:
                                await _flush(sender, out)
                                await _catch_up(svc, sender, item.tenant, cursor)
                    else:
                        await _flush(sender, out)
                        await _marker(svc, sender, item, cursors)
                    if sub.lagged and sub.drained():
                        # events were dropped while the queue was full: read them from the feeds
                        await _flush(sender, out)
                        sub.lagged = False
                        svc.metrics.inc("conveyor_websocket_catch_ups_total")
                        for tenant, cursor in list(cursors.items()):
                            await _catch_up(svc, sender, tenant, cursor)
                    if len(out) >= SEND_BATCH:
                        break
                    try:
                        item = sub.receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await _flush(sender, out)
        except StoreUnavailable:
            closer(TRY_AGAIN_LATER, "storage unavailable: reconnect and resume from your lastEventId")


async def _flush(sender: wsdirect.DirectSender, out: list[str]) -> None:
    if out:
        await sender.send_many(out)
        out.clear()


async def _marker(
    svc: Services, sender: wsdirect.DirectSender, item: object, cursors: dict[str, feed.Cursor]
) -> None:
    """A connection's own marker from its queue: catch up, subscribed, unsubscribed."""
    if isinstance(item, CatchUp):
        if (cursor := cursors.get(item.tenant)) is not None:
            await _catch_up(svc, sender, item.tenant, cursor)
    elif isinstance(item, _Subscribe):
        cursors[item.tenant] = await _position(svc, sender, item)
    elif isinstance(item, _Unsubscribe):
        cursors.pop(item.tenant, None)


async def _position(svc: Services, sender: wsdirect.DirectSender, item: _Subscribe) -> feed.Cursor:
    if item.after is None:
        head = await svc.jobs.feed_head(item.tenant)
        await sender.send(_message("SUBSCRIBED", tenantId=item.tenant, lastEventId=head))
        return feed.Cursor(head)
    await sender.send(_message("SUBSCRIBED", tenantId=item.tenant, lastEventId=item.after, resumed=True))
    cursor = feed.Cursor(item.after)
    await _catch_up(svc, sender, item.tenant, cursor)
    return cursor


async def _catch_up(svc: Services, sender: wsdirect.DirectSender, tenant: str, cursor: feed.Cursor) -> None:
    """Send the feed's events after the cursor, a page per read (in one write where the socket
    takes it), or RESYNC when some are gone."""
    while True:
        head, entries = await svc.jobs.read_feed(tenant, cursor.last, CATCH_UP_PAGE)
        whole = feed.catch_up(cursor.last, head, entries)
        if whole is None:
            await sender.send(_message(
                "RESYNC", tenantId=tenant, lastEventId=head,
                error="events after your lastEventId are no longer kept: reload through the "
                      "REST API, then go on from lastEventId",
            ))
            cursor.last = head
            return
        if whole:
            await sender.send_many([feed.with_id(event_id, data) for event_id, data, _prev in whole])
            cursor.last = whole[-1][0]
        if len(entries) < CATCH_UP_PAGE:
            return


async def _heartbeat(svc: Services, sub: Subscriber, closer: _Closer, heard: list[float]) -> None:
    """PING the client every interval; close a socket that has sent nothing for the idle timeout
    (a client answers PING with PONG)."""
    interval = svc.config.ws_ping_seconds
    idle = svc.config.ws_idle_timeout_seconds
    while True:
        await trio.sleep(min(interval, idle) if idle > 0 else interval)
        if idle > 0 and trio.current_time() - heard[0] > idle:
            closer(IDLE, f"nothing heard from the client for {idle:g} s: answer PING with PONG")
            return
        sub.offer(_message("PING"))


async def _close_on_drain(svc: Services, closer: _Closer) -> None:
    await svc.node.draining.wait()
    closer(1001, "node is shutting down")


def _handle(
    raw: str | bytes, svc: Services, who: Principal, sub: Subscriber, tenants: set[str]
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
    if kind == "PONG":
        return None
    if kind == "AUTH":
        return _message("ERROR", error="already authenticated")
    if kind in ("SUBSCRIBE", "UNSUBSCRIBE"):
        tenant = msg.get("tenantId", who.tenant)
        if not keys.valid_tenant_id(tenant):
            return _message("ERROR", error=f"{kind} needs a tenantId: it {keys.TENANT_ID_RULE}")
        if who.tenant is not None and tenant != who.tenant:
            return _message(
                "ERROR", error=f"forbidden: this connection may subscribe to tenant {who.tenant} only"
            )
        if kind == "UNSUBSCRIBE":
            tenants.discard(tenant)
            svc.hub.unsubscribe(tenant, sub)
            sub.offer(_Unsubscribe(tenant))
            return _message("UNSUBSCRIBED", tenantId=tenant)
        after = msg.get("lastEventId")
        if after is not None and not feed.resumable(after):
            return _message("ERROR", error="lastEventId must be an eventId the feed sent, like \"1732950000000-0\"")
        if tenant not in tenants and len(tenants) >= MAX_SUBSCRIPTIONS:
            return _message("ERROR", error=f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        tenants.add(tenant)
        svc.hub.subscribe(tenant, sub)  # live events queue up behind the marker
        sub.offer(_Subscribe(tenant, after))
        return None  # the pump acknowledges, once the cursor is placed
    return _message(
        "ERROR", error=f"unknown message type {kind!r}; expected SUBSCRIBE, UNSUBSCRIBE, PING or PONG"
    )
