"""conveyor.client's events() follows a tenant's feed across a restart of the node it is connected
to, losing nothing and repeating nothing, as `conveyor watch` does."""

from __future__ import annotations

import signal

import trio

from conveyor.client import AsyncClient, Event
from tests.conftest import free_port
from tests.faults.conftest import Cluster


async def test_events_resume_across_a_restart_of_the_node(cluster: Cluster, tenant: str) -> None:
    watched = await cluster.start("w", port=free_port(), CONVEYOR_CONCURRENCY=4)
    other = await cluster.start("x", CONVEYOR_CONCURRENCY=4)
    got: list[Event] = []
    subscribed = 0
    ids: list[str] = []

    def completed() -> set[str]:
        return {e.job_id for e in got if e.status == "COMPLETED" and e.job_id}

    async with AsyncClient(watched.url, tenant=tenant) as follower, AsyncClient(other.url, tenant=tenant) as submitter:

        async def submit(n: int) -> None:
            ids.extend(await submitter.submit_many([("ledger", {"ms": 20})] * n))

        with trio.fail_after(90):
            async with follower.events() as feed:
                async for event in feed:
                    if event.type == "SUBSCRIBED":
                        subscribed += 1
                        if subscribed == 1:
                            await submit(20)
                        continue
                    got.append(event)
                    if len(ids) == 20 and completed() >= set(ids):
                        watched.signal(signal.SIGTERM)  # drained: the feed's socket closes (1001)
                        assert await watched.wait() == 0
                        await submit(20)  # while it cannot connect
                        await cluster.wait_terminal(tenant, len(ids))
                        await watched.start()
                    if len(ids) == 40 and completed() >= set(ids):
                        break
    redis = cluster.queue_redis()
    try:
        log = [i for i, _ in redis.xrange(cluster.feed_key(tenant))]
    finally:
        redis.close()
    assert subscribed >= 2  # it reconnected
    assert [e.event_id for e in got] == log  # every event, once, in order
