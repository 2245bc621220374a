"""Failures stay with their owner: a value PostgreSQL refuses fails only its own submission or
outcome, not the rest of its batch (issue 11). The values here get past the rules on purpose, as
one the rules missed would, so that what is shown is the stores' and actors' side.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from conveyor.actors.recorder import record_batch
from conveyor.actors.writer import Submit, run_writer
from conveyor.config import Config
from conveyor.limits import defaults
from conveyor.metrics import Metrics
from conveyor.model import Finished, NewJob, Outcome
from conveyor.validation import Invalid
from tests.helpers import dispatch
from tests.integration.test_fencing_fairness import events_for, leftovers, new_job, submit_and_start


def unstorable(tenant: str) -> NewJob:
    """A job whose payload, as stored, is JSON that PostgreSQL refuses (NaN)."""
    job = new_job(tenant)
    return attrs.evolve(job, payload_json='{"delayMs": 0, "x": NaN}')


async def test_one_refused_submission_fails_alone_in_its_group_commit(stores: Any, tenant: str) -> None:
    pg, redis = stores
    send, recv = trio.open_memory_channel[Submit](16)
    replies = []
    batch = [[new_job(tenant)], [new_job(tenant), unstorable(tenant)], [new_job(tenant)], [new_job(tenant)]]
    for jobs in batch:  # all waiting before the writer starts: one group commit
        reply_send, reply_recv = trio.open_memory_channel[Any](1)
        send.send_nowait(Submit(tuple(jobs), reply_send))
        replies.append(reply_recv)
    limits = defaults(Config(tenant_submit_rate=0, tenant_max_queued=0, tenant_max_queued_bytes=0))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_writer(pg, redis, recv, Metrics(), lambda tenant: limits))
            answers = [await r.receive() for r in replies]
            nursery.cancel_scope.cancel()
    assert [a is None for a in answers] == [True, False, True, True]
    refused = answers[1]
    assert isinstance(refused, Invalid) and "cannot be stored" in refused.details[0].message
    _, total, _ = await pg.list_jobs(tenant, None, 100, 0)
    assert total == 3  # the others were committed; nothing of the refused submission was


async def test_one_refused_outcome_fails_alone_and_says_why(stores: Any, tenant: str) -> None:
    pg, redis = stores
    with trio.fail_after(20):
        claimed = [await submit_and_start(pg, redis, new_job(tenant), "node-x") for _ in range(5)]
        # the third's result is one PostgreSQL cannot store (the executor's rule would refuse it)
        outcomes = [
            Finished(job, Outcome.COMPLETED, result={"n": i} if i != 2 else {"v": float("inf")})
            for i, job in enumerate(claimed)
        ]
        await record_batch(pg, redis, outcomes)
        rows = [await pg.get_job(job.id) for job in claimed]
        events = [await events_for(redis, tenant, job.id) for job in claimed]
        left = [await leftovers(redis, tenant, job.id, "leases") for job in claimed]
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]
    assert rows[0]["result"] == {"n": 0} and rows[2]["result"] is None
    assert rows[2]["error"].startswith("the job's outcome could not be stored: PostgreSQL refused")
    assert [e[-1]["status"] for e in events] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]
    assert left == [(0, None)] * 5  # every one of them left the dispatch index


async def test_an_end_is_published_once_by_the_call_that_drops_the_envelope(stores: Any, tenant: str) -> None:
    pg, redis = stores
    with trio.fail_after(20):
        job = await submit_and_start(pg, redis, new_job(tenant), "node-x")
        done = Finished(job, Outcome.COMPLETED, result={"ok": True})
        await record_batch(pg, redis, [done])
        # the same outcome again (a retried call whose answer was lost, a duplicate): refused by
        # PostgreSQL, no envelope at that attempt in Redis: nothing more is published
        await record_batch(pg, redis, [done])
        await record_batch(pg, redis, [Finished(job, Outcome.REQUEUED, error="lease expired")])
        statuses = [e["status"] for e in await events_for(redis, tenant, job.id)]
    assert statuses == ["PENDING", "RUNNING", "COMPLETED"]


async def test_a_reaped_job_whose_row_ended_is_finished_not_run_again(stores: Any, tenant: str) -> None:
    pg, redis = stores
    with trio.fail_after(20):
        job = await submit_and_start(pg, redis, new_job(tenant), "node-x")
        # node X committed COMPLETED and died before telling Redis: its lease is still there
        await pg.record([], [{"id": job.id, "attempt": 1, "new_attempt": 1, "status": "COMPLETED",
                              "error": None, "result": None, "delay_ms": 0}])
        await trio.to_thread.run_sync(lambda: redis.client.zadd(redis.tkey(tenant, "leases"), {job.id: 0}))
        ((verdict, reaped),) = await redis.reap(10, lease_ms=60_000)
        assert verdict == "requeued"  # by Redis's count it has attempts left...
        await record_batch(pg, redis, [Finished(reaped, Outcome.REQUEUED, error="lease expired")])
        # ...but its row had ended: it got its terminal event, and nothing is left to claim
        assert await redis.claim(10, node="node-y", lease_ms=60_000) == []
        statuses = [e["status"] for e in await events_for(redis, tenant, job.id)]
        row = await pg.get_job(job.id)
        left = await leftovers(redis, tenant, job.id, "leases")
    assert statuses == ["PENDING", "RUNNING", "COMPLETED"] and row["status"] == "COMPLETED"
    assert left == (0, None)


async def test_a_held_job_cancelled_is_published_once(stores: Any, tenant: str) -> None:
    pg, redis = stores
    with trio.fail_after(20):
        job = new_job(tenant)
        await pg.insert_jobs([(None, [job])])
        await dispatch(redis, [job])
        verdict, attempt = await redis.cancel(tenant, job.id, lease_ms=60_000)
        assert (verdict, attempt) == ("parked", 0)
        assert await redis.claim(10, node="node-y", lease_ms=60_000) == []  # held: not claimable
        row = await pg.cancel_job(job.id, tenant)
        assert row is not None and row["status"] == "CANCELLED"
        # the canceller died before dropping it: the lease expires and the reaper finishes it
        await trio.to_thread.run_sync(lambda: redis.client.zadd(redis.tkey(tenant, "leases"), {job.id: 0}))
        ((verdict, reaped),) = await redis.reap(10, lease_ms=60_000)
        assert verdict == "cancelled"
        await record_batch(pg, redis, [Finished(reaped, Outcome.CANCELLED, error="cancelled by request")])
        statuses = [e["status"] for e in await events_for(redis, tenant, job.id)]
        left = await leftovers(redis, tenant, job.id, "leases")
    assert statuses == ["PENDING", "CANCELLED"] and left == (0, None)
