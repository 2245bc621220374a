"""The dispatch index on a real Valkey Cluster (issue 16), the session's (tests/services.py): 3
masters, 3 replicas. Work spreads over every master, a flood on one shard does not hold back a
tenant on another, and a cluster wiped mid-run is rebuilt from PostgreSQL."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
import redis as redis_lib
import trio

from conveyor.config import Config
from conveyor.model import NewJob
from conveyor.shards import CLUSTER_DEFAULT_SHARDS, ShardMap
from conveyor.stores import RedisStore
from tests import services
from tests.conftest import delete_prefix
from tests.helpers import base_url, dispatch, wait_until
from tests.redis_cluster import ValkeyCluster


@pytest.fixture
def valkey(redis_prefix: str) -> Any:
    cluster = services.session_cluster()
    yield cluster
    delete_prefix(cluster.url, redis_prefix)


def statuses(config: Config) -> Counter[str]:
    with psycopg.connect(config.database_url) as conn:
        return Counter(dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()))


async def all_completed(config: Config, n: int) -> bool:
    return await trio.to_thread.run_sync(statuses, config) == {"COMPLETED": n}


async def completed(config: Config) -> int:
    return (await trio.to_thread.run_sync(statuses, config))["COMPLETED"]


def completed_by_tenant(config: Config) -> dict[str, int]:
    with psycopg.connect(config.database_url) as conn:
        rows = conn.execute("SELECT tenant_id, count(*) FROM jobs WHERE status = 'COMPLETED' GROUP BY 1").fetchall()
    return dict(rows)


def each_master(cluster: ValkeyCluster, fn: Callable[[redis_lib.Redis], Any]) -> dict[int, Any]:
    out = {}
    for port in cluster.masters():
        client = redis_lib.Redis(host="127.0.0.1", port=port, decode_responses=True)
        try:
            out[port] = fn(client)
        finally:
            client.close()
    return out


def balanced_tenants(cluster: ValkeyCluster, shards: ShardMap, n: int) -> list[str]:
    """n tenant ids, spread-0, spread-1, … skipping those that would give one master more than
    its third: 50 draws of a hash over 3 masters are uneven by chance (11 % of random sets put
    more than twice as many tenants on one master as on another), a population of tenants is
    not; the unit tests check the hash's uniformity. What this measures is how evenly equal
    shares of work spread: keys, claims and commands per master."""
    masters = cluster.masters()
    count = dict.fromkeys(masters, 0)
    chosen: list[str] = []
    for i in range(10 * n):
        master = cluster.master_of(shards.tenant_base(f"spread-{i}"))
        if count[master] < -(-n // len(masters)):
            count[master] += 1
            chosen.append(f"spread-{i}")
            if len(chosen) == n:
                return chosen
    raise AssertionError(count)


async def test_5000_jobs_of_50_tenants_through_two_nodes_spread_over_every_master(
    start_node: Any, make_config: Callable[..., Config], valkey: ValkeyCluster, redis_prefix: str
) -> None:
    config = make_config(redis_url=valkey.url)
    nodes = [await start_node(redis_url=valkey.url, concurrency=32) for _ in range(2)]
    assert nodes[0].redis.cluster and nodes[0].redis.shards.count == CLUSTER_DEFAULT_SHARDS
    tenants = balanced_tenants(valkey, nodes[0].redis.shards, 50)
    await trio.to_thread.run_sync(each_master, valkey, lambda c: c.config_resetstat())
    with trio.fail_after(120):
        async with httpx.AsyncClient(timeout=30) as client:
            for i, tenant in enumerate(tenants):
                batch = [{"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}}] * 100
                r = await client.post(base_url(nodes[i % 2]) + "/jobs/batch", json={"jobs": batch})
                assert r.status_code == 201, r.text
        held = await trio.to_thread.run_sync(
            each_master, valkey, lambda c: sum(1 for _ in c.scan_iter(match=f"{redis_prefix}:*", count=1000))
        )
        await wait_until(lambda: all_completed(config, 5000), interval=0.2)
    calls = await trio.to_thread.run_sync(
        each_master, valkey, lambda c: sum(int(s["calls"]) for s in c.info("commandstats").values())
    )
    assert len(held) == 3 and all(n > 0 for n in held.values()), held  # every master holds keys
    # every master served claims: the jobs of the tenants whose shard it holds ran
    shards, master = ShardMap(redis_prefix, CLUSTER_DEFAULT_SHARDS), valkey.master_of
    done = completed_by_tenant(config)
    claimed_on = Counter({port: 0 for port in held})
    for tenant in tenants:
        claimed_on[master(shards.tenant_base(tenant))] += done.get(tenant, 0)
    assert all(n > 0 for n in claimed_on.values()), claimed_on
    assert max(calls.values()) <= 2 * min(calls.values()), calls  # commands within 2x of each other


def on_other_master(cluster: ValkeyCluster, shards: ShardMap, tenant: str) -> str:
    """A tenant whose shard lives on another master than `tenant`'s."""
    master = cluster.master_of
    mine = master(shards.tenant_base(tenant))
    return next(
        other for other in (f"{tenant}-b{i}" for i in range(1000)) if master(shards.tenant_base(other)) != mine
    )


async def test_one_claim_round_reaches_a_tenant_on_another_shard_behind_a_flood(
    valkey: ValkeyCluster, redis_prefix: str, tenant: str
) -> None:
    redis = RedisStore(valkey.url, prefix=redis_prefix, pool_size=4)
    flood = tenant
    single = on_other_master(valkey, redis.shards, flood)
    try:
        with trio.fail_after(60):
            for _ in range(10):
                await dispatch(redis, [NewJob(str(uuid.uuid4()), flood, "sleep", {}, 3, 1000) for _ in range(1000)])
            late = NewJob(str(uuid.uuid4()), single, "sleep", {}, 3, 1000)
            await dispatch(redis, [late])
            for _ in range(3):  # whichever shard a round starts at
                claimed = await redis.claim(2, node="n", lease_ms=60_000)
                if late.id in {c.id for c in claimed}:
                    break
                assert [c.tenant_id for c in claimed] == [flood, flood]
            assert {c.tenant_id for c in claimed} == {flood, single}
            assert late.id in {c.id for c in claimed}
    finally:
        await redis.close()


async def test_a_tenant_on_another_shard_starts_within_a_round_of_a_flood_on_a_node(
    start_node: Any, valkey: ValkeyCluster, tenant: str
) -> None:
    node = await start_node(redis_url=valkey.url, concurrency=4)
    flood, single = tenant, on_other_master(valkey, node.redis.shards, tenant)
    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=base_url(node), timeout=30) as client:
            batch = [{"tenantId": flood, "type": "sleep", "payload": {"delayMs": 50}}] * 1000
            for _ in range(10):
                assert (await client.post("/jobs/batch", json={"jobs": batch})).status_code == 201
            _, before, _ = await node.pg.list_jobs(flood, "COMPLETED", 1, 0)
            r = await client.post("/jobs", json={"tenantId": single, "type": "sleep", "payload": {"delayMs": 0}})
            job_id = r.json()["jobId"]

            async def done() -> bool:
                return (await client.get(f"/jobs/{job_id}")).json()["status"] == "COMPLETED"

            await wait_until(done)
            _, after, _ = await node.pg.list_jobs(flood, "COMPLETED", 1, 0)
    # the flood needs 10,000 x 50 ms / 4 executors = 125 s; the single job waited for the 4 jobs
    # running when it came, and ran in the next round (what recording lag adds, at most a few)
    assert after - before <= 20, (before, after)


async def test_a_cluster_wiped_mid_run_is_rebuilt_and_every_job_completes(
    start_node: Any, make_config: Callable[..., Config], valkey: ValkeyCluster, tenant: str
) -> None:
    config = make_config(redis_url=valkey.url)
    node = await start_node(redis_url=valkey.url, concurrency=8, reconcile_seconds=0.5)
    tenants = [f"{tenant}-{i}" for i in range(10)]
    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=base_url(node), timeout=30) as client:
            for t in tenants:
                batch = [{"tenantId": t, "type": "sleep", "payload": {"delayMs": 20}}] * 50
                assert (await client.post("/jobs/batch", json={"jobs": batch})).status_code == 201
            await wait_until(lambda: completed(config), interval=0.05)
            await trio.to_thread.run_sync(each_master, valkey, lambda c: c.flushall())
            remaining = 500 - await completed(config)
            await wait_until(lambda: all_completed(config, 500), interval=0.2)
    assert remaining > 0  # the wipe came while jobs were still to run


async def test_a_script_a_master_lacks_is_loaded_on_that_master_alone(valkey: ValkeyCluster, redis_prefix: str) -> None:
    """A master without a script (a replica promoted by a failover) gets it loaded on it alone:
    redis-py loads it on every master, and while one of them was down that held a live shard's
    call (and the heartbeat's leases) for seconds."""
    redis = RedisStore(valkey.url, prefix=redis_prefix, pool_size=4)
    try:
        tenant = "script-load"
        served = valkey.master_of(redis.shards.tenant_base(tenant))
        sha = redis._conn.scripts["history"].sha
        each_master(valkey, lambda client: client.script_flush())
        await redis.history(tenant)  # NOSCRIPT, then loaded, then run
        loaded = each_master(valkey, lambda client: client.script_exists(sha)[0])
        assert loaded == {port: port == served for port in valkey.masters()}
    finally:
        await redis.close()
