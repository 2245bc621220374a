"""Fencing and fairness, by constructing the exact situations against the real stores.

Fencing (River's job rescuer, pg-boss's attempt fence): an attempt whose lease expired and whose
job was claimed again must not record its outcome. Fairness: a tenant with one job is claimed
within one claim round behind a tenant with ten thousand.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import trio

from conveyor.actors.recorder import record_batch
from conveyor.model import Envelope, Finished, NewJob, Outcome, Started
from conveyor.stores import PostgresStore, RedisStore
from conveyor.stores.redis import Applied
from conveyor.wire import job_update
from tests.helpers import base_url, dispatch, wait_until


def new_job(tenant: str) -> NewJob:
    return NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, max_attempts=3, timeout_ms=1000)


async def expire_lease(redis: RedisStore, tenant: str, job_id: str) -> None:
    await trio.to_thread.run_sync(lambda: redis.client.zadd(redis.tkey(tenant, "leases"), {job_id: 0}))


async def submit_and_start(pg: PostgresStore, redis: RedisStore, job: NewJob, node: str) -> Envelope:
    """Commit and dispatch a job, claim it as `node` and record its start."""
    await pg.insert_jobs([(None, [job])])
    await dispatch(redis, [job])
    (claimed,) = await redis.claim(1, node=node, lease_ms=60_000)
    await record_batch(pg, redis, [Started(claimed)])
    return claimed


async def leftovers(redis: RedisStore, tenant: str, job_id: str, zset: str) -> tuple[int, Any]:
    """Whether the job still has an envelope, and its score in a sorted set."""
    return await trio.to_thread.run_sync(
        lambda: (redis.client.exists(redis.tkey(tenant, "job", job_id)), redis.client.zscore(redis.tkey(tenant, zset), job_id))
    )


async def reclaim_elsewhere(pg: PostgresStore, redis: RedisStore, tenant: str, job_id: str) -> Envelope:
    """Node X stalls past its lease: the reaper takes the job back, node Y claims it again."""
    await expire_lease(redis, tenant, job_id)
    ((verdict, reaped),) = await redis.reap(10, lease_ms=60_000)
    assert verdict == "requeued"
    await record_batch(pg, redis, [Finished(reaped, Outcome.REQUEUED, error="lease expired")])
    (second,) = await redis.claim(1, node="node-y", lease_ms=60_000)
    assert second.attempt == 2
    return second


async def events_for(redis: RedisStore, tenant: str, job_id: str) -> list[dict[str, Any]]:
    entries = await trio.to_thread.run_sync(lambda: redis.client.xrange(redis.feed_key(tenant)))
    return [m for m in (json.loads(f["d"]) for _, f in entries) if m["jobId"] == job_id]


async def test_a_stale_attempt_cannot_record_its_outcome(stores: Any, tenant: str) -> None:
    pg, redis = stores
    job = new_job(tenant)
    with trio.fail_after(20):
        first = await submit_and_start(pg, redis, job, "node-x")
        second = await reclaim_elsewhere(pg, redis, tenant, job.id)
        await record_batch(pg, redis, [Started(second)])
        # X wakes up: its heartbeat learns the lease is gone, and its outcome is refused
        assert await redis.heartbeat([(job.id, 1, tenant)], node="node-x", lease_ms=60_000) == [(job.id, "lost")]
        await record_batch(pg, redis, [Finished(first, Outcome.COMPLETED, result={"by": "x"})])
        row = await pg.get_job(job.id)
        assert (row["status"], row["attempts"], row["result"]) == ("RUNNING", 2, None)
        assert await redis.heartbeat([(job.id, 2, tenant)], node="node-y", lease_ms=60_000) == []
        # Y's outcome is the one that counts
        await record_batch(pg, redis, [Finished(second, Outcome.COMPLETED, result={"by": "y"})])
        row = await pg.get_job(job.id)
        assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 2, {"by": "y"})
        statuses = [e["status"] for e in await events_for(redis, tenant, job.id)]
        assert statuses == ["PENDING", "RUNNING", "PENDING", "RUNNING", "COMPLETED"]
        # nothing of the job is left in Redis
        assert await leftovers(redis, tenant, job.id, "leases") == (0, None)


async def test_the_claim_publishes_running_before_any_write_and_the_recorder_only_the_end(
    stores: Any, tenant: str
) -> None:
    pg, redis = stores
    job = new_job(tenant)
    with trio.fail_after(20):
        await pg.insert_jobs([(None, [job])])
        await dispatch(redis, [job])
        (claimed,) = await redis.claim(1, node="n", lease_ms=60_000)
        # heard at once, before PostgreSQL has the start: the watcher need not wait for the write
        (created, running) = await events_for(redis, tenant, job.id)
        assert created["status"] == "PENDING"
        assert {k: v for k, v in running.items() if k != "updatedAt"} == {
            "type": "JOB_UPDATE", "jobId": job.id, "tenantId": tenant, "status": "RUNNING", "error": None,
            "attempts": 1, "maxAttempts": 3}
        assert running["updatedAt"].endswith("Z") and running["updatedAt"] >= created["updatedAt"]
        assert (await pg.get_job(job.id))["status"] == "PENDING"
        # started and finished in one batch: the recorder publishes the end alone, after it
        await record_batch(pg, redis, [Started(claimed), Finished(claimed, Outcome.COMPLETED)])
        assert [e["status"] for e in await events_for(redis, tenant, job.id)] == ["PENDING", "RUNNING", "COMPLETED"]


async def test_stale_outcome_first_means_exactly_one_terminal_transition(stores: Any, tenant: str) -> None:
    pg, redis = stores
    job = new_job(tenant)
    with trio.fail_after(20):
        first = await submit_and_start(pg, redis, job, "node-x")
        second = await reclaim_elsewhere(pg, redis, tenant, job.id)
        # X's outcome lands before Y's start is recorded: X wins, Y is fenced out entirely
        await record_batch(pg, redis, [Finished(first, Outcome.COMPLETED, result={"by": "x"})])
        await record_batch(pg, redis, [Started(second)])
        await record_batch(pg, redis, [Finished(second, Outcome.RETRY, error="late", delay_ms=10)])
        row = await pg.get_job(job.id)
        assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 1, {"by": "x"})
        terminal = [e for e in await events_for(redis, tenant, job.id) if e["status"] in ("COMPLETED", "FAILED")]
        assert len(terminal) == 1
        # Y's refused retry did not put the job back into Redis
        assert await leftovers(redis, tenant, job.id, "delayed") == (0, None)


async def test_terminal_rows_never_revert(stores: Any, tenant: str) -> None:
    pg, redis = stores
    job = new_job(tenant)
    with trio.fail_after(20):
        claimed = await submit_and_start(pg, redis, job, "n")
        await record_batch(pg, redis, [Finished(claimed, Outcome.FAILED, error="x")])
        for outcome in (Outcome.COMPLETED, Outcome.RETRY, Outcome.HANDBACK):
            await record_batch(pg, redis, [Finished(claimed, outcome)])
        row = await pg.get_job(job.id)
        assert (row["status"], row["error"]) == ("FAILED", "x")


async def test_duplicate_dispatch_runs_once(stores: Any, tenant: str) -> None:
    pg, redis = stores
    job = new_job(tenant)
    with trio.fail_after(10):
        assert await dispatch(redis, [job]) == 1
        assert await dispatch(redis, [job]) == 0  # already dispatched: skipped
        # even if the tenant is on the ring twice, only one claim gets the job
        await trio.to_thread.run_sync(lambda: redis.client.rpush(redis.tkey(tenant, "ring"), tenant))
        claimed = await redis.claim(10, node="n", lease_ms=60_000)
        assert [c.id for c in claimed] == [job.id]
        # and put back into the ready queue behind the script's back while it runs, it is skipped
        await trio.to_thread.run_sync(lambda: redis.client.zadd(redis.tkey(tenant, "ready", tenant), {job.id: 1}))
        await trio.to_thread.run_sync(lambda: redis.client.rpush(redis.tkey(tenant, "ring"), tenant))
        assert await redis.claim(10, node="n", lease_ms=60_000) == []


async def test_claims_rotate_across_tenants(stores: Any) -> None:
    _, redis = stores
    flood, single = f"flood-{uuid.uuid4().hex[:6]}", f"single-{uuid.uuid4().hex[:6]}"
    with trio.fail_after(60):
        for _ in range(10):
            await dispatch(redis, [new_job(flood) for _ in range(1000)])
        late = new_job(single)
        await dispatch(redis, [late])
        # one claim round with two free slots: one job of each tenant
        claimed = await redis.claim(2, node="n", lease_ms=60_000)
        assert {c.tenant_id for c in claimed} == {flood, single}
        assert late.id in {c.id for c in claimed}


async def test_a_small_tenant_is_not_starved_by_a_flood(start_node: Any, tenant: str) -> None:
    node = await start_node(concurrency=4)
    flood = tenant + "-flood"
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=base_url(node), timeout=30) as client:
            batch = [{"tenantId": flood, "type": "sleep", "payload": {"delayMs": 50}}] * 1000
            for _ in range(10):
                assert (await client.post("/jobs/batch", json={"jobs": batch})).status_code == 201
            started = trio.current_time()
            r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}})
            job_id = r.json()["jobId"]

            async def done() -> bool:
                return (await client.get(f"/jobs/{job_id}")).json()["status"] == "COMPLETED"

            await wait_until(done)
            waited = trio.current_time() - started
            _, flood_done, _ = await node.pg.list_jobs(flood, "COMPLETED", 1, 0)
    # the flood needs 10,000 × 50 ms / 4 executors ≈ 125 s; B waited about one job's length
    assert flood_done < 5000
    assert waited < 5


async def test_a_lease_expiring_on_the_last_attempt_fails_the_job(stores: Any, tenant: str) -> None:
    pg, redis = stores
    job = NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, max_attempts=1, timeout_ms=1000)
    with trio.fail_after(20):
        await submit_and_start(pg, redis, job, "dead-node")
        await expire_lease(redis, tenant, job.id)
        ((verdict, reaped),) = await redis.reap(10, lease_ms=60_000)
        assert verdict == "failed"
        await record_batch(pg, redis, [Finished(reaped, Outcome.FAILED, error="lease expired")])
        row = await pg.get_job(job.id)
        assert (row["status"], row["attempts"], row["error"]) == ("FAILED", 1, "lease expired")
        assert await redis.reap(10, lease_ms=60_000) == []
        assert await redis.claim(1, node="n", lease_ms=60_000) == []


async def test_an_attempt_that_lost_its_lease_is_cancelled(start_node: Any, tenant: str) -> None:
    node = await start_node(lease_seconds=0.9)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 1500}})
            job_id = r.json()["jobId"]
            await wait_until(lambda: node.pool.running_count() == 1)
            # another node now holds this attempt's lease (as after a reap and a new claim)
            await trio.to_thread.run_sync(
                lambda: node.redis.client.hset(node.redis.tkey(tenant, "job", job_id), "n", "other-node")
            )
            # the attempt is cancelled, and once the recorder has its (LOST) outcome the node
            # stops holding the lease
            await wait_until(lambda: node.pool.running_count() == 0 and job_id not in node.pool.leases)

            async def completed() -> dict[str, Any] | None:
                job = (await client.get(f"/jobs/{job_id}")).json()
                return job if job["status"] == "COMPLETED" else None

            # the stolen lease is never extended, expires, and the job gets a second attempt
            job = await wait_until(completed)
    assert job["attempts"] == 2


async def test_the_reconciler_lock_has_one_holder_at_a_time(stores: Any) -> None:
    _, redis = stores
    with trio.fail_after(10):
        assert await redis.try_lock("reconciler", "node-a", 200)
        assert await redis.try_lock("reconciler", "node-a", 200)  # kept, and renewed
        assert not await redis.try_lock("reconciler", "node-b", 200)
        await wait_until(lambda: redis.try_lock("reconciler", "node-b", 200))  # after it lapses
        assert not await redis.try_lock("reconciler", "node-a", 200)


async def test_a_late_outcome_from_before_a_retry_by_hand_is_fenced_out(stores: Any, tenant: str) -> None:
    from conveyor.model import JobRecord
    from conveyor.wire import job_json

    pg, redis = stores
    job = NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, max_attempts=1, timeout_ms=1000)
    with trio.fail_after(20):
        stalled = await submit_and_start(pg, redis, job, "stalled-node")
        await expire_lease(redis, tenant, job.id)
        ((_, reaped),) = await redis.reap(10, lease_ms=60_000)
        await record_batch(pg, redis, [Finished(reaped, Outcome.FAILED, error="lease expired")])
        row = await pg.retry_job(job.id, None, 2)  # as POST /jobs/{id}/retry does
        assert row is not None
        await redis.reconcile([{**row, "due_in_ms": 0}])
        (again,) = await redis.claim(1, node="n", lease_ms=60_000)
        assert again.runs == (2, 3) and again.attempt == 3  # attempt number 2 was skipped
        await record_batch(pg, redis, [Started(again)])
        # the stalled node wakes up with attempt 1's result: refused
        await record_batch(pg, redis, [Finished(stalled, Outcome.COMPLETED, result={"late": True})])
        assert (await pg.get_job(job.id))["status"] == "RUNNING"
        await record_batch(pg, redis, [Finished(again, Outcome.COMPLETED, result={"late": False})])
        shown = job_json(JobRecord.from_row(await pg.get_job(job.id)))
    assert (shown["status"], shown["attempts"], shown["maxAttempts"], shown["result"]) == (
        "COMPLETED", 2, 3, {"late": False})


async def test_the_event_postgresql_builds_for_an_outcome_is_the_rows_job_update(stores: Any, tenant: str) -> None:
    # record_finished returns each written row's JOB_UPDATE as JSON text (built in SQL, so that
    # the node does not render it): the same JSON as wire.job_update of the row, the same text
    # as json.dumps writes where the error is ASCII
    pg, redis = stores
    errors = [None, "plain", 'quote " backslash \\ newline \n tab \t control \x01 end', "unicode é ✓ 🚀"]
    with trio.fail_after(30):
        for error in errors:
            job = await submit_and_start(pg, redis, new_job(tenant), "node-x")
            status = "COMPLETED" if error is None else "FAILED"
            _, (row,) = await pg.record([], [{"id": job.id, "attempt": 1, "new_attempt": 1, "status": status,
                                              "error": error, "result": None, "delay_ms": 0}])
            (state,) = await pg.job_states([job.id])
            assert row["id"] == job.id and row["status"] == status
            assert json.loads(row["event"]) == job_update(state)
            if error is None or error.isascii():
                assert row["event"] == json.dumps(job_update(state))


def same_shard_tenants(redis: RedisStore, n: int) -> list[str]:
    """n new tenant names that live on the same shard (all of them, with one shard)."""
    first = f"fair-{uuid.uuid4().hex[:8]}"
    found = [first]
    while len(found) < n:
        name = f"fair-{uuid.uuid4().hex[:8]}"
        if redis.shards.of(name) == redis.shards.of(first):
            found.append(name)
    return found


async def test_claims_share_a_turn_as_one_job_at_a_time_would(stores: Any) -> None:
    # claim.lua takes each tenant's share of a claim at once: the shares, and the order in which
    # the tenants get the one more across claims, are those of taking one job of each in turn
    _, redis = stores
    a, b, c = same_shard_tenants(redis, 3)
    with trio.fail_after(30):
        for name in (a, b, c):
            await dispatch(redis, [new_job(name) for _ in range(100)])
        per_claim = []
        while sum(map(len, per_claim)) < 12:
            claimed = await redis.claim(4, node="n", lease_ms=60_000)
            per_claim.append([job.tenant_id for job in claimed])
        seven = await redis.claim(7, node="n", lease_ms=60_000)
    totals = {name: sum(claim.count(name) for claim in per_claim) for name in (a, b, c)}
    assert totals == {a: 4, b: 4, c: 4}
    if redis.shards.count == 1:  # one claim call per claim: the turns are exact
        assert [{name: claim.count(name) for name in (a, b, c)} for claim in per_claim] == [
            {a: 2, b: 1, c: 1}, {a: 1, b: 2, c: 1}, {a: 1, b: 1, c: 2},
        ]
        assert sorted(job.tenant_id for job in seven) == sorted([a, a, a, b, b, c, c])


async def test_a_claim_goes_past_ids_that_no_longer_run(stores: Any, tenant: str) -> None:
    # ids left in a ready queue whose jobs are gone are popped and skipped, and the claim goes on
    # to the job behind them in the same call (a claim that came back empty would idle the fetcher)
    _, redis = stores
    job = new_job(tenant)
    with trio.fail_after(30):
        await dispatch(redis, [job])
        queue = redis.tkey(tenant, "ready", tenant)
        stale = {f"gone-{i}": -1000 + i for i in range(150)}  # ahead of the job
        await trio.to_thread.run_sync(lambda: redis.client.zadd(queue, stale))
        claimed = await redis.claim(64, node="n", lease_ms=60_000)
    assert [c.id for c in claimed] == [job.id]


async def test_a_claim_larger_than_a_slice_takes_it_all(stores: Any, tenant: str) -> None:
    # a node with many executors claims more of one tenant's jobs than one variadic command
    # holds (lua/_lib.lua's SLICE): the share is taken a slice at a time, and every job once
    _, redis = stores
    jobs = [new_job(tenant) for _ in range(5000)]
    with trio.fail_after(60):
        for start in range(0, len(jobs), 1000):
            await dispatch(redis, jobs[start : start + 1000])
        claimed = await redis.claim(5000, node="n", lease_ms=60_000)
        again = await redis.claim(10, node="n", lease_ms=60_000)
    assert sorted(c.id for c in claimed) == sorted(j.id for j in jobs) and again == []


async def test_a_job_put_back_keeps_its_priority(stores: Any, tenant: str) -> None:
    """A hand-back (a draining node) and a requeue (the reaper's take-back) put the job on its
    tenant's ready queue again at its own priority: an urgent job goes back ahead of the
    tenant's ordinary jobs that were ready before it."""
    _, redis = stores
    urgent = NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, 3, 1000, priority=0)
    with trio.fail_after(10):
        await dispatch(redis, [urgent])
        (claimed,) = await redis.claim(1, node="n", lease_ms=60_000)
        ordinary = [new_job(tenant) for _ in range(3)]  # priority 5, ready while it runs
        await dispatch(redis, ordinary)
        for action in ("handback", "requeue"):
            await redis.finish([Applied(tenant, urgent.id, claimed.attempt, action)])
            (claimed,) = await redis.claim(1, node="n", lease_ms=60_000)
            assert claimed.id == urgent.id, action
