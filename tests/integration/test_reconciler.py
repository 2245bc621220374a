"""PostgreSQL is the truth and Redis is rebuilt from it: jobs committed but never dispatched, and
jobs whose Redis data was flushed, still run to the end."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import redis as redis_lib
import trio

from conveyor.model import NewJob
from tests.helpers import base_url, wait_until


async def test_a_job_committed_but_never_dispatched_runs(start_node: Any, tenant: str) -> None:
    node = await start_node(reconcile_seconds=0.3)
    # the state a crash (or a Redis error) between the commit and the dispatch leaves behind
    job = NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, max_attempts=3, timeout_ms=1000)
    with trio.fail_after(30):
        await node.pg.insert_jobs([(None, [job])])

        async def completed() -> bool:
            row = await node.pg.get_job(job.id)
            return row["status"] == "COMPLETED"

        await wait_until(completed, interval=0.1)
    assert node.metrics.value("conveyor_jobs_reconciled_total") == 1
    row = await node.pg.get_job(job.id)
    assert row["attempts"] == 1


async def test_redis_flushed_mid_run_loses_nothing(start_node: Any, tenant: str, private_redis: Any) -> None:
    node = await start_node(
        redis_url=private_redis.url, reconcile_seconds=0.3, concurrency=8, lease_seconds=1.5
    )
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=base_url(node), timeout=20) as client:
            jobs = [{"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 300}}] * 40
            ids = (await client.post("/jobs/batch", json={"jobs": jobs})).json()["jobIds"]

            async def some_running() -> bool:
                return node.pool.running_count() == 8

            await wait_until(some_running)
            # Redis loses everything: queues, envelopes, leases, events
            await trio.to_thread.run_sync(lambda: redis_lib.Redis.from_url(private_redis.url).flushall())

            async def all_completed() -> bool:
                rows, total, _ = await node.pg.list_jobs(tenant, "COMPLETED", 1, 0)
                return total == len(ids)

            await wait_until(all_completed, interval=0.2)
    assert node.metrics.value("conveyor_jobs_reconciled_total") >= 40 - 8
