"""A dispatch that claims for an idle node (RedisStore.enqueue_claiming, enqueue.lua with
claim_ready), and the RUNNING events claims publish, against the real Redis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
import trio

from conveyor.model import NewJob
from conveyor.stores import RedisStore
from conveyor.stores.redis import ClaimAsk
from conveyor.wire import created_events, iso
from tests.conftest import REDIS_URL
from tests.helpers import dispatch


def new_job(tenant: str) -> NewJob:
    return NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, max_attempts=3, timeout_ms=1000)


async def feed(redis: RedisStore, tenant: str) -> list[dict[str, Any]]:
    entries = await trio.to_thread.run_sync(lambda: redis.client.xrange(redis.feed_key(tenant)))
    return [json.loads(f["d"]) for _, f in entries]


async def wake_tokens(redis: RedisStore) -> int:
    return int(await trio.to_thread.run_sync(lambda: redis.client.llen(f"{redis.shards.base(0)}:wake")))


async def test_a_dispatch_claims_fairly_for_an_idle_node_and_publishes_running(stores: Any, tenant: str) -> None:
    _, redis = stores
    assert redis.claims_on_enqueue  # one shard, as in the suite's passes on a single Redis
    other = f"{tenant}-b"
    with trio.fail_after(10):
        waiting = new_job(other)
        await dispatch(redis, [waiting])  # another tenant's job was ready first
        await trio.to_thread.run_sync(lambda: redis.client.delete(f"{redis.shards.base(0)}:wake"))
        mine = [new_job(tenant) for _ in range(3)]
        claimed = await redis.enqueue_claiming(mine, created_events(mine), ClaimAsk(2, "node-a", 60_000))
        # one of each tenant: the claim rotates over the tenants with ready work
        assert sorted(j.tenant_id for j in claimed) == sorted([tenant, other])
        assert {j.id for j in claimed} == {waiting.id, mine[0].id}
        assert all(j.attempt == 1 for j in claimed)
        # two of mine are left ready: the fetchers are woken as for a dispatch without a claim
        assert await wake_tokens(redis) == 3
        rest = await redis.claim(10, node="node-b", lease_ms=60_000)
        assert {j.id for j in rest} == {mine[1].id, mine[2].id}
        # every job's PENDING, then its RUNNING, stamped with Redis's clock
        events = await feed(redis, tenant)
        assert [(e["jobId"], e["status"]) for e in events] == [
            *((j.id, "PENDING") for j in mine), (mine[0].id, "RUNNING"), (mine[1].id, "RUNNING"), (mine[2].id, "RUNNING")]
        running = events[3]
        assert (running["tenantId"], running["attempts"], running["maxAttempts"], running["error"]) == (tenant, 1, 3, None)
        at = datetime.fromisoformat(running["updatedAt"].replace("Z", "+00:00"))
        assert abs(at - datetime.now(UTC)) < timedelta(seconds=5)


async def test_a_dispatch_whose_claim_took_every_job_wakes_no_fetcher(stores: Any, tenant: str) -> None:
    _, redis = stores
    assert redis.claims_on_enqueue
    with trio.fail_after(10):
        jobs = [new_job(tenant), new_job(tenant)]
        claimed = await redis.enqueue_claiming(jobs, created_events(jobs), ClaimAsk(4, "node-a", 60_000))
        assert {j.id for j in claimed} == {j.id for j in jobs}
        assert await wake_tokens(redis) == 0


async def test_a_dispatch_that_claims_nothing_wakes_the_fetchers_as_usual(stores: Any, tenant: str) -> None:
    _, redis = stores
    assert redis.claims_on_enqueue  # one shard, as in the suite's passes on a single Redis
    with trio.fail_after(10):
        jobs = [new_job(tenant), new_job(tenant)]
        assert await redis.enqueue_claiming(jobs, created_events(jobs), ClaimAsk(0, "node-a", 60_000)) == []
        assert await wake_tokens(redis) == 2
        assert [e["status"] for e in await feed(redis, tenant)] == ["PENDING", "PENDING"]


async def test_with_several_shards_the_fetchers_claim(redis_prefix: str, tenant: str) -> None:
    redis = RedisStore(REDIS_URL, prefix=redis_prefix, pool_size=2, shards=4)
    try:
        with trio.fail_after(10):
            assert not redis.claims_on_enqueue
            jobs = [new_job(tenant)]
            assert await redis.enqueue_claiming(jobs, created_events(jobs), ClaimAsk(4, "node-a", 60_000)) == []
            assert [j.id for j in await redis.claim(4, node="node-b", lease_ms=60_000)] == [jobs[0].id]
    finally:
        await redis.close()


@pytest.mark.parametrize("at", [
    datetime(1970, 1, 1, tzinfo=UTC), datetime(2000, 2, 29, 23, 59, 59, 999000, tzinfo=UTC),
    datetime(2024, 12, 31, 12, 0, 0, 7000, tzinfo=UTC), datetime(2026, 3, 1, 0, 0, 0, 1000, tzinfo=UTC),
    datetime(2100, 2, 28, 1, 2, 3, 456000, tzinfo=UTC), datetime(2400, 12, 31, 23, 0, tzinfo=UTC),
])
async def test_the_scripts_write_times_as_the_wire_does(stores: Any, at: datetime) -> None:
    _, redis = stores
    lib = resources.files("conveyor.stores").joinpath("lua", "_lib.lua").read_text()
    ms = int(at.timestamp() * 1000)
    written = await trio.to_thread.run_sync(
        lambda: redis.client.eval(lib + "return iso_ms(tonumber(ARGV[1]))", 0, ms))
    assert written == iso(at)
