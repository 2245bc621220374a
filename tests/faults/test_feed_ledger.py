"""A crash after a commit loses no event and runs no finished job again (issue 11).

The ledger here is the tenant's feed as well as the executions: every terminal row must have its
terminal event in the feed exactly once, and no execution may start after its job's row ended.
First the exact race (a node dies between committing a job's end and telling Redis), then chaos:
two nodes, thousands of short jobs, kill -9 after kill -9.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import Any

import httpx
import psycopg
import trio

from tests.conftest import shard_map
from tests.faults.conftest import Cluster
from tests.helpers import wait_until

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def rows(cluster: Cluster, tenant: str) -> dict[str, tuple[str, float]]:
    """job id -> (status, unix time of its last change)."""
    with psycopg.connect(cluster.config.database_url) as conn:
        found = conn.execute(
            "SELECT id::text, status, extract(epoch FROM updated_at)::float8 FROM jobs WHERE tenant_id = %s",
            (tenant,),
        )
        return {job: (status, at) for job, status, at in found.fetchall()}


def terminal_events(cluster: Cluster, tenant: str) -> Counter[tuple[str, str]]:
    """(job id, status) of every terminal JOB_UPDATE in the tenant's feed, counted."""
    return Counter(
        (e["jobId"], e["status"]) for e in cluster.feed_events(tenant)
        if e.get("type") == "JOB_UPDATE" and e.get("status") in TERMINAL
    )


def index_empty(cluster: Cluster, tenant: str) -> bool:
    client = cluster.queue_redis()
    p = shard_map(cluster.config).tenant_base(tenant)
    try:
        return client.zcard(f"{p}:leases") == 0 and int(client.hget(f"{p}:queued", tenant) or 0) == 0
    finally:
        client.close()


def assert_ledger(cluster: Cluster, tenant: str, accepted: set[str]) -> dict[str, tuple[str, float]]:
    table = rows(cluster, tenant)
    assert set(table) == accepted
    assert all(status in TERMINAL for status, _ in table.values())
    # every terminal row has its terminal event in the feed, exactly once, with its status
    assert terminal_events(cluster, tenant) == Counter({(job, status): 1 for job, (status, _) in table.items()})
    # and no execution started after its row had ended
    late = [(job, at - table[job][1]) for job, at in cluster.start_times() if job in table and at > table[job][1]]
    assert late == [], late[:10]
    return table


async def test_a_node_dies_between_committing_an_end_and_telling_redis(cluster: Cluster, tenant: str) -> None:
    doomed = await cluster.start("doomed", CONVEYOR_FAULTS="exit-after-record")
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as client:
            r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 0}})
            assert r.status_code == 201, r.text
            job_id = r.json()["jobId"]
        assert await doomed.wait() == 70  # died with COMPLETED committed, its lease still in Redis
        assert rows(cluster, tenant)[job_id][0] == "COMPLETED"
        assert terminal_events(cluster, tenant) == Counter()
        rescuer = await cluster.start("rescuer")
        # the lease expires; the rescuer's reaper finds the row ended: it publishes that end
        await wait_until(lambda: terminal_events(cluster, tenant), interval=0.1)
        async with httpx.AsyncClient(base_url=rescuer.url, timeout=10) as client:
            stats = (await client.get("/stats", params={"tenantId": tenant})).json()
    assert_ledger(cluster, tenant, {job_id})
    assert len(cluster.starts()) == 1  # it did not run again
    assert stats["unfinished"] == 0  # nothing of it is left in the dispatch index
    redis = cluster.queue_redis()
    p = shard_map(cluster.config).tenant_base(tenant)
    try:
        assert not redis.exists(f"{p}:job:{job_id}")
        assert redis.zscore(f"{p}:leases", job_id) is None
    finally:
        redis.close()


async def test_chaos_kill_9_after_kill_9_loses_no_event(cluster: Cluster, tenant: str) -> None:
    env = {"CONVEYOR_CONCURRENCY": 32, "CONVEYOR_FEED_RETENTION_EVENTS": 200_000}
    nodes = {name: await cluster.start(name, **env) for name in ("a", "b")}
    accepted: set[str] = set()
    kills = 0
    rng = random.Random(11)
    with trio.fail_after(240):
        async with httpx.AsyncClient(timeout=10) as client:

            async def submit(batch: list[dict[str, Any]]) -> None:
                # one Idempotency-Key per batch: a batch whose node died mid-request is sent again
                # (to whichever node answers) and still creates its jobs once
                key = str(uuid.uuid4())
                while True:
                    for node in list(nodes.values()):
                        try:
                            r = await client.post(f"{node.url}/jobs/batch", json={"jobs": batch},
                                                  headers={"Idempotency-Key": key})
                        except httpx.HTTPError:
                            continue
                        if r.status_code == 201:
                            accepted.update(r.json()["jobIds"])
                            return
                        assert r.status_code == 503, r.text
                    await trio.sleep(0.1)

            async def submitter(done: trio.Event) -> None:
                for _ in range(40):
                    job = {"tenantId": tenant, "type": "ledger", "payload": {"ms": rng.randint(1, 30)}}
                    await submit([job] * 100)
                    await trio.sleep(0.25)
                done.set()

            async def killer(done: trio.Event) -> None:
                nonlocal kills
                while not done.is_set() or kills < 8:
                    await trio.sleep(rng.uniform(0.6, 1.5))
                    name = rng.choice(sorted(nodes))
                    await nodes[name].kill()
                    kills += 1
                    await trio.sleep(rng.uniform(0.1, 0.5))
                    await nodes[name].start()

            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(submitter, done)
                nursery.start_soon(killer, done)
            await cluster.wait_terminal(tenant, len(accepted))
            # Only a call that drops a job's envelope publishes its end: once the dispatch index
            # holds nothing of the tenant (no envelope, no lease), no end can be published again,
            # so the feed counted then is final.
            await wait_until(lambda: index_empty(cluster, tenant), interval=0.2)
    assert len(accepted) == 4000 and kills >= 8
    table = assert_ledger(cluster, tenant, accepted)
    assert Counter(status for status, _ in table.values())["COMPLETED"] >= 3900
