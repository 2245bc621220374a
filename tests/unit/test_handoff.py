"""The writer's claim along with a dispatch, for a node whose fetcher is idle (actors/handoff.py),
with fake stores: what it asks for, what reaches the executors, which slots go back."""

from __future__ import annotations

from typing import Any

import trio

from conveyor.actors.handoff import LocalClaims
from conveyor.actors.pool import ExecutorPool
from conveyor.actors.writer import Submit, run_writer, submit_through
from conveyor.config import Config
from conveyor.limits import defaults
from conveyor.metrics import Metrics
from conveyor.model import Envelope, NewJob
from tests.fakes import FakeDispatch, FakeJobRows

LIMITS = defaults(Config())


def new_job(n: int) -> NewJob:
    return NewJob(f"job-{n}", "acme", "sleep", {"delayMs": 0}, max_attempts=3, timeout_ms=1000)


def envelope(n: int) -> Envelope:
    return Envelope(f"job-{n}", "acme", "sleep", {"delayMs": 0}, 1, 3, 1000)


async def submit_with_handoff(
    redis: FakeDispatch, pool: ExecutorPool, jobs: list[NewJob], draining: trio.Event | None = None
) -> list[Envelope]:
    """Submit `jobs` through a writer with local claims; what reached the executors' channel."""
    send, recv = trio.open_memory_channel[Submit](10)
    to_run, running = trio.open_memory_channel[Envelope](pool.size)
    local = LocalClaims(pool, to_run, draining if draining is not None else trio.Event(), "node-a", Config())
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda **kw: run_writer(FakeJobRows(), redis, recv, Metrics(), lambda t: LIMITS, local=local, **kw))
        await submit_through(send, jobs, None)
        nursery.cancel_scope.cancel()
    got = []
    while True:
        try:
            got.append(running.receive_nowait())
        except trio.WouldBlock:
            return got


async def test_an_idle_fetcher_lets_the_writer_claim_for_the_free_slots(autojump_clock: Any) -> None:
    redis, pool = FakeDispatch(), ExecutorPool(4)
    redis.claims_on_enqueue = True
    redis.ready = [envelope(1), envelope(2)]  # what the script would claim: the jobs just dispatched
    pool.fetcher_idle = True
    handed = await submit_with_handoff(redis, pool, [new_job(1), new_job(2)])
    ((jobs, ask),) = redis.called("enqueue_claiming")
    assert [j.id for j in jobs] == ["job-1", "job-2"]
    assert (ask.n, ask.node, ask.lease_ms) == (2, "node-a", int(Config().lease_seconds * 1000))  # no more than it submits
    assert [j.id for j in handed] == ["job-1", "job-2"]
    assert {job_id for job_id, _, _ in pool.held()} == {"job-1", "job-2"}  # heartbeaten from now on
    assert pool.busy() == 2  # the executors give these back when the jobs end


async def test_slots_that_the_claim_did_not_fill_go_back(autojump_clock: Any) -> None:
    redis, pool = FakeDispatch(), ExecutorPool(4)
    redis.claims_on_enqueue = True
    redis.ready = [envelope(1)]  # another node took the other one first
    pool.fetcher_idle = True
    handed = await submit_with_handoff(redis, pool, [new_job(1), new_job(2), new_job(3)])
    assert [j.id for j in handed] == ["job-1"]
    assert pool.busy() == 1


async def test_no_claim_when_the_fetcher_is_busy_the_node_drains_or_the_store_cannot(autojump_clock: Any) -> None:
    drained = trio.Event()
    drained.set()
    for idle, draining, claims in ((False, None, True), (True, drained, True), (True, None, False)):
        redis, pool = FakeDispatch(), ExecutorPool(4)
        redis.claims_on_enqueue = claims
        pool.fetcher_idle = idle
        assert await submit_with_handoff(redis, pool, [new_job(1)], draining) == []
        assert redis.called("enqueue_claiming") == [] and len(redis.called("enqueue")) == 1
        assert pool.busy() == 0


async def test_a_failed_dispatch_gives_the_slots_back_and_the_submit_still_succeeds(autojump_clock: Any) -> None:
    redis, pool = FakeDispatch(), ExecutorPool(4)
    redis.claims_on_enqueue = True
    redis.outages.add("enqueue")
    pool.fetcher_idle = True
    assert await submit_with_handoff(redis, pool, [new_job(1)]) == []  # committed: the reconciler dispatches it
    assert pool.busy() == 0 and pool.held() == []
