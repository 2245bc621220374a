"""The node's open WebSockets and their subscriptions to tenants' feeds, in memory (no I/O).

The broadcaster actor offers each job event it reads to the subscribers of its tenant; a
subscriber's queue is bounded, and one that falls behind is marked lagged and catches up from
the feed itself (feed.py) rather than being buffered further. The web layer attaches connections
and subscribes them; the tenants service closes those of a revoked key.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio


@attrs.frozen
class CatchUp:
    """Tells a subscriber to read its tenant's feed after its cursor (the broadcaster has just
    begun to read that feed live, from a point the subscriber may be behind of)."""

    tenant: str


@attrs.frozen
class FeedEvent:
    """A job event as read live: its tenant, id in the tenant's feed, the id before it, JSON."""

    tenant: str
    id: str
    prev: str
    data: str


class Subscriber:
    """One WebSocket connection's side of the feed: a bounded queue of messages (text to send,
    FeedEvents, or the connection's own markers).

    When the queue is full, a job event is dropped and the subscriber marked `lagged`: the
    connection catches up from the feed once it has sent what it holds (nothing is lost, memory
    stays bounded). Any other message that finds the queue full calls on_lag, which closes the
    connection."""

    def __init__(self, queue_size: int, on_lag: Callable[[], None]) -> None:
        self.send, self.receive = trio.open_memory_channel[object](queue_size)
        self.on_lag = on_lag
        self.lagged = False

    def offer(self, message: object) -> None:
        from_feed = isinstance(message, FeedEvent | CatchUp)
        if from_feed and self.lagged:
            return
        try:
            self.send.send_nowait(message)
        except trio.WouldBlock:
            if from_feed:
                self.lagged = True
            else:
                self.on_lag()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def drained(self) -> bool:
        return self.receive.statistics().current_buffer_used == 0


@attrs.define(eq=False)
class Connection:
    """An open WebSocket: whose it is, and how to close it (revoked key, drain)."""

    tenant: str | None
    key_id: str | None
    close: Callable[[int, str], None]


class Hub:
    """Open connections and their subscriptions (tenant -> subscribers). Only the event loop
    touches it."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, set[Subscriber]] = {}
        self._connections: set[Connection] = set()
        # called when a tenant gets its first subscriber here: the broadcaster stops its
        # blocking read, so that it reads the new tenant's feed at once
        self.on_new_tenant: Callable[[], None] = lambda: None

    @property
    def connections(self) -> int:
        return len(self._connections)

    def attach(self, conn: Connection) -> None:
        self._connections.add(conn)

    def detach(self, conn: Connection) -> None:
        self._connections.discard(conn)

    def open_for(self, tenant: str) -> int:
        return sum(1 for c in self._connections if c.tenant == tenant)

    def key_ids(self) -> set[str]:
        return {c.key_id for c in self._connections if c.key_id is not None}

    def close_keys(self, key_ids: set[str], code: int, reason: str) -> int:
        """Close every connection authenticated by one of these keys; returns how many."""
        doomed = [c for c in self._connections if c.key_id in key_ids]
        for conn in doomed:
            conn.close(code, reason)
        return len(doomed)

    def subscribe(self, tenant: str, sub: Subscriber) -> None:
        if tenant not in self._by_tenant:
            self._by_tenant[tenant] = set()
            self.on_new_tenant()
        self._by_tenant[tenant].add(sub)

    def unsubscribe(self, tenant: str, sub: Subscriber) -> None:
        subs = self._by_tenant.get(tenant)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_tenant[tenant]

    def publish(self, tenant: str, message: object) -> None:
        for sub in list(self._by_tenant.get(tenant, ())):
            sub.offer(message)

    def tenants(self) -> set[str]:
        return set(self._by_tenant)

    def subscribers(self, tenant: str) -> list[Subscriber]:
        return list(self._by_tenant.get(tenant, ()))

    def subscriptions(self) -> int:
        return sum(len(s) for s in self._by_tenant.values())
