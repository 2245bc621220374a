"""What the dispatch index counts while the scripts batch their writes (lua/_lib.lua: one ZADD
per tenant for an enqueue's ready jobs; one ZREM, SREM and DEL per finish call; each tenant's
unfinished jobs and their payloads' bytes summed and written once per call)."""

from __future__ import annotations

import uuid
from typing import Any

import trio

from conveyor.model import NewJob
from conveyor.stores import RedisStore
from conveyor.stores.redis import Applied
from tests.helpers import dispatch


def job(tenant: str, size: int, **extra: Any) -> NewJob:
    return NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0, "pad": "x" * size}, 3, 1000, **extra)


def payload_bytes(jobs: list[NewJob]) -> int:
    return sum(len(j.payload_json.encode()) for j in jobs)


async def counters(redis: RedisStore, tenant: str) -> tuple[int, int, int, int]:
    """(unfinished jobs, their payloads' bytes, leases held, ready jobs) of a tenant."""

    def read() -> tuple[int, int, int, int]:
        c = redis.client
        queued = int(c.hget(redis.tkey(tenant, "queued"), tenant) or 0)
        size = int(c.hget(redis.tkey(tenant, "qbytes"), tenant) or 0)
        running = c.scard(redis.tkey(tenant, "running", tenant))
        ready = c.zcard(redis.tkey(tenant, "ready", tenant))
        return queued, size, running, ready

    return await trio.to_thread.run_sync(read)


async def test_counts_follow_each_job_through_batched_calls(stores: Any, tenant: str) -> None:
    _, redis = stores
    a, b = f"{tenant}-a", f"{tenant}-b"
    jobs_a = [job(a, 10 + i) for i in range(30)]
    jobs_b = [job(b, 100) for _ in range(5)]
    later = job(a, 7, delay_ms=600_000)  # delayed: counted, not ready
    with trio.fail_after(30):
        # one call with both tenants, interleaved, and a job sent twice (dispatched once)
        mixed = [x for pair in zip(jobs_a, jobs_b + [None] * 25, strict=True) for x in pair if x]
        assert await dispatch(redis, [*mixed, later, jobs_a[0]]) == 36
        assert await counters(redis, a) == (31, payload_bytes([*jobs_a, later]), 0, 30)
        assert await counters(redis, b) == (5, payload_bytes(jobs_b), 0, 5)
        claimed = await redis.claim(100, node="n", lease_ms=60_000)
        assert len(claimed) == 35
        # FIFO within a tenant held through the batched ZADD
        assert [c.id for c in claimed if c.tenant_id == a] == [j.id for j in jobs_a]
        by_id = {c.id: c for c in claimed}
        done = [by_id[j.id] for j in jobs_a[:20]]
        retried, handed = by_id[jobs_a[20].id], by_id[jobs_a[21].id]
        outcomes = [Applied(c.tenant_id, c.id, c.attempt, "completed") for c in done]
        outcomes += [
            Applied(retried.tenant_id, retried.id, retried.attempt, "retry", 600_000),
            Applied(handed.tenant_id, handed.id, handed.attempt, "handback"),
            # the same outcome twice in one call: applied once
            Applied(done[0].tenant_id, done[0].id, done[0].attempt, "completed"),
            # a stale attempt: not applied
            Applied(done[1].tenant_id, done[1].id, done[1].attempt - 1, "completed"),
        ]
        outcomes += [Applied(c.tenant_id, c.id, c.attempt, "failed") for c in claimed if c.tenant_id == b]
        await redis.finish(outcomes)
        left = [*jobs_a[20:], later]
        # 8 still leased (jobs 22-29), the handed-back one ready again
        assert await counters(redis, a) == (len(left), payload_bytes(left), 8, 1)
        assert await counters(redis, b) == (0, 0, 0, 0)
        rest = [by_id[j.id] for j in jobs_a[22:]]
        again = await redis.claim(10, node="n", lease_ms=60_000)
        assert [c.id for c in again] == [handed.id]
        await redis.finish([Applied(c.tenant_id, c.id, c.attempt, "done") for c in [*rest, *again]])
        assert await counters(redis, a) == (2, payload_bytes([jobs_a[20], later]), 0, 0)

