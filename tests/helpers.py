"""Helpers shared by the integration and acceptance tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from conveyor import tenants
from conveyor.model import NewJob
from conveyor.node import Node
from conveyor.stores import RedisStore
from conveyor.wire import created_events


def base_url(node: Node) -> str:
    return node.urls[0]


async def wait_until(predicate: Callable[[], Any], *, interval: float = 0.02) -> Any:
    """Poll an async or sync predicate until it returns something truthy.

    Callers bound it with trio.fail_after (every I/O test has a deadline).
    """
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        await trio.sleep(interval)


ADMIN_KEY = "test-admin-key-0123456789abcdef"


async def new_tenant(node: Node, tenant: str, **limits: Any) -> str:
    """Create a tenant (with limit overrides, wire names) and one API key; returns the key."""
    await tenants.create_tenant(node.pg, {"id": tenant, **limits}, node.config)
    created = await tenants.create_key(node.pg, tenant, "test")
    await node.tenants.refresh()
    return str(created["key"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class ResumingFeed:
    """A WebSocket client of one tenant's feed that reconnects whenever its socket closes —
    to the next of its URLs — and resumes from the last eventId it received. It answers PINGs.
    `events` is every event received, in order: (eventId, message)."""

    def __init__(self, urls: list[str], tenant: str) -> None:
        self.urls = urls
        self.tenant = tenant
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.last: str | None = None
        self.connects = 0
        self.subscribed = False
        self.resyncs = 0

    def completed(self) -> set[str]:
        return {m["jobId"] for _, m in self.events if m.get("status") == "COMPLETED"}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        import json

        from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

        started = False
        attempt = 0
        while True:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                async with open_websocket_url(url) as ws:
                    assert json.loads(await ws.get_message())["type"] == "CONNECTED"
                    subscribe: dict[str, Any] = {"type": "SUBSCRIBE", "tenantId": self.tenant}
                    if self.last is not None:
                        subscribe["lastEventId"] = self.last
                    await ws.send_message(json.dumps(subscribe))
                    ack = json.loads(await ws.get_message())
                    assert ack["type"] == "SUBSCRIBED", ack
                    if self.last is None:
                        self.last = ack["lastEventId"]
                    self.connects += 1
                    self.subscribed = True
                    if not started:
                        started = True
                        task_status.started()
                    while True:
                        msg = json.loads(await ws.get_message())
                        if msg["type"] == "PING":
                            await ws.send_message(json.dumps({"type": "PONG"}))
                        elif msg["type"] == "RESYNC":
                            self.resyncs += 1
                            self.last = msg["lastEventId"]
                        elif "eventId" in msg:
                            self.events.append((msg["eventId"], msg))
                            self.last = msg["eventId"]
            except (ConnectionClosed, HandshakeError, OSError):
                self.subscribed = False
                await trio.sleep(0.1)


async def dispatch(redis: RedisStore, jobs: list[NewJob]) -> int:
    """Put jobs in the dispatch index as the writer does after their commit."""
    return await redis.enqueue(jobs, created_events(jobs))
