"""A feed client whose node is killed reconnects to another node and loses nothing."""

from __future__ import annotations

import httpx
import trio

from tests.faults.conftest import Cluster
from tests.helpers import ResumingFeed, wait_until


async def test_a_client_resumes_on_another_node_after_a_kill_9(cluster: Cluster, tenant: str) -> None:
    a = await cluster.start("a", CONVEYOR_CONCURRENCY=4)
    b = await cluster.start("b", CONVEYOR_CONCURRENCY=4)
    client_feed = ResumingFeed([f"{n.url.replace('http://', 'ws://')}/ws" for n in (a, b)], tenant)
    ids: list[str] = []
    with trio.fail_after(90):
        async with httpx.AsyncClient(base_url=b.url, timeout=10) as client, trio.open_nursery() as nursery:
            await nursery.start(client_feed.run)  # on node a
            for n in range(120):
                if n == 40:
                    await wait_until(lambda: len(client_feed.events) >= 60)
                    await a.kill()  # the client's node dies; its jobs run again after the lease
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 30}})
                assert r.status_code == 201, r.text
                ids.append(r.json()["jobId"])
                await trio.sleep(0.02)
            await cluster.wait_terminal(tenant, len(ids))
            await wait_until(lambda: client_feed.completed() >= set(ids))  # PostgreSQL is written first
            redis = cluster.queue_redis()
            try:
                feed = [entry_id for entry_id, _ in redis.xrange(cluster.feed_key(tenant))]
            finally:
                redis.close()
            await wait_until(lambda: client_feed.last == feed[-1])
            nursery.cancel_scope.cancel()
    got = [event_id for event_id, _ in client_feed.events]
    assert client_feed.connects >= 2 and client_feed.resyncs == 0
    assert got == feed  # every event of the tenant's feed, once each, in order
    assert client_feed.completed() == set(ids)
