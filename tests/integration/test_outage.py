"""Guarantee 1: a 2xx on submit means the row is committed; with PostgreSQL down, submit answers
503 quickly and nothing runs. The outage is a cut TCP proxy between the node and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio

from tests.helpers import base_url, wait_until
from tests.tcp_proxy import TcpProxy


async def test_postgres_down_means_503_quickly_and_nothing_runs(
    nursery: trio.Nursery, start_node: Any, database_url: str, tenant: str
) -> None:
    server = urlsplit(database_url)
    proxy = TcpProxy(server.port or 5432)
    await proxy.start(nursery)
    proxied = urlunsplit(server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}"))
    node = await start_node(database_url=proxied)
    job = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}}
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=base_url(node), timeout=20) as client:
            assert (await client.post("/jobs", json=job)).status_code == 201
            proxy.cut()
            for _ in range(3):
                asked = trio.current_time()
                r = await client.post("/jobs", json=job)
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "Storage unavailable, try again later"
                assert trio.current_time() - asked < 2.0
            ready = await client.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["postgres"]["ok"] is False
            # no job was dispatched for the refused submissions: nothing is waiting in Redis
            queued = await trio.to_thread.run_sync(lambda: node.redis.client.zcard(node.redis.tkey(tenant, "ready", tenant)))
            assert queued == 0
            await proxy.start(nursery)  # PostgreSQL is back: the node recovers by itself

            async def accepted() -> bool:
                return (await client.post("/jobs", json=job)).status_code == 201

            await wait_until(accepted, interval=0.2)
    _, total, _ = await node.pg.list_jobs(tenant, None, 1, 0)
    assert total == 2
