"""The writer, the recorder and the fetcher against in-memory stores (tests/fakes.py), on trio's
MockClock: group commit, coalescing of start and finish, fencing refusals, and what each does
while a store is out."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from conveyor.actors.executor import InlineJobs
from conveyor.actors.fetcher import WAKE_BLOCK_S, run_fetcher
from conveyor.actors.pool import ExecutorPool
from conveyor.actors.recorder import record_batch, run_recorder
from conveyor.actors.writer import DISPATCH_CHUNK, WRITERS, Submit, run_writer, submit_through
from conveyor.config import Config
from conveyor.failures import StoreUnavailable
from conveyor.handlers import Handler, Registry
from conveyor.limits import defaults
from conveyor.metrics import Metrics
from conveyor.model import (
    Envelope,
    Finished,
    Flush,
    NewJob,
    Outcome,
    Progress,
    Record,
    Started,
    Status,
)
from conveyor.validation import Invalid
from tests.fakes import FakeDispatch, FakeJobRows

LIMITS = defaults(Config())


def new_job(n: int, tenant: str = "acme") -> NewJob:
    return NewJob(f"job-{n}", tenant, "sleep", {"delayMs": n}, max_attempts=3, timeout_ms=1000)


def envelope(n: int, attempt: int = 1, tenant: str = "acme") -> Envelope:
    return Envelope(f"job-{n}", tenant, "sleep", {"delayMs": n}, attempt, 3, 1000)


async def _writer(pg: FakeJobRows, redis: FakeDispatch, nursery: trio.Nursery) -> trio.MemorySendChannel[Submit]:
    send, recv = trio.open_memory_channel[Submit](100)
    await nursery.start(lambda **kw: run_writer(pg, redis, recv, Metrics(), lambda tenant: LIMITS, **kw))
    return send


async def test_writer_commits_what_waits_in_one_transaction(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    answers: list[BaseException | None] = []

    async def submit(n: int, writer: trio.MemorySendChannel[Submit]) -> None:
        try:
            await submit_through(writer, [new_job(n)], None)
            answers.append(None)
        except Exception as exc:
            answers.append(exc)

    async with trio.open_nursery() as nursery:
        send, recv = trio.open_memory_channel[Submit](100)
        with trio.fail_after(5):
            async with trio.open_nursery() as submitters:
                for n in range(20):  # all waiting before the writer runs: one group commit
                    submitters.start_soon(submit, n, send)
                await trio.testing.wait_all_tasks_blocked()
                await nursery.start(lambda **kw: run_writer(pg, redis, recv, Metrics(), lambda t: LIMITS, **kw))
        nursery.cancel_scope.cancel()
    assert answers == [None] * 20
    (inserted,) = pg.called("insert_jobs")
    assert sorted(job.id for jobs in inserted for job in jobs) == sorted(f"job-{n}" for n in range(20))
    ((jobs, created),) = redis.called("enqueue")  # dispatched after the commit, in one call too
    assert len(jobs) == 20 and [json.loads(e)["status"] for e in created] == ["PENDING"] * 20
    assert [json.loads(e)["jobId"] for e in created] == [job.id for job in jobs]


async def test_writer_answers_an_outage_and_goes_on(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    pg.outages.add("insert_jobs")
    async with trio.open_nursery() as nursery:
        writer = await _writer(pg, redis, nursery)
        with pytest.raises(StoreUnavailable):  # the caller answers 503; nothing was written
            await submit_through(writer, [new_job(1)], None)
        assert redis.called("enqueue") == []
        await submit_through(writer, [new_job(2)], None)  # PostgreSQL is back: the next one lands
        nursery.cancel_scope.cancel()
    assert set(pg.rows) == {"job-2"}


async def test_writer_refuses_only_the_submission_that_cannot_be_stored(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    pg.refused_ids.add("job-3")
    results: dict[int, BaseException | None] = {}

    async def submit(n: int, writer: trio.MemorySendChannel[Submit]) -> None:
        try:
            await submit_through(writer, [new_job(n)], None)
            results[n] = None
        except Exception as exc:
            results[n] = exc

    async with trio.open_nursery() as nursery:
        send, recv = trio.open_memory_channel[Submit](100)
        with trio.fail_after(5):
            async with trio.open_nursery() as submitters:
                for n in range(8):  # one batch, in which one submission cannot be stored
                    submitters.start_soon(submit, n, send)
                await trio.testing.wait_all_tasks_blocked()
                await nursery.start(lambda **kw: run_writer(pg, redis, recv, Metrics(), lambda t: LIMITS, **kw))
        nursery.cancel_scope.cancel()
    assert isinstance(results.pop(3), Invalid)
    assert results == {n: None for n in range(8) if n != 3}
    assert set(pg.rows) == {f"job-{n}" for n in range(8) if n != 3}


async def test_writer_succeeds_when_only_the_dispatch_fails(autojump_clock: Any) -> None:
    # committed is submitted: the reconciler dispatches the rows once Redis answers
    pg, redis = FakeJobRows(), FakeDispatch()
    redis.outages.add("enqueue")
    async with trio.open_nursery() as nursery:
        writer = await _writer(pg, redis, nursery)
        await submit_through(writer, [new_job(1)], None)
        nursery.cancel_scope.cancel()
    assert set(pg.rows) == {"job-1"}


async def test_recorder_writes_a_start_and_finish_in_one_batch_once(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    job = envelope(1)
    pg.add(job, Status.PENDING)
    await record_batch(pg, redis, [Started(job), Finished(job, Outcome.COMPLETED, result={"ok": 1})])
    ((starts, finishes),) = pg.called("record")
    assert starts == [] and [(f["id"], f["status"]) for f in finishes] == [("job-1", "COMPLETED")]
    ((outcomes, events),) = redis.called("finish")
    (applied,) = outcomes
    assert (applied.id, applied.attempt, applied.action) == ("job-1", 1, "completed")
    # the end alone: the claim published the RUNNING (stores/lua/claim.lua)
    assert [json.loads(e)["status"] for e in applied.events] == ["COMPLETED"]
    assert events == []


async def test_recorder_writes_a_start_and_publishes_only_the_latest_progress(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    job = envelope(1)
    pg.add(job, Status.PENDING)
    await record_batch(pg, redis, [Started(job), Progress(job, 0.1, "a"), Progress(job, 0.5, "b")])
    ((starts, finishes),) = pg.called("record")
    assert starts == [("job-1", 1)] and finishes == []
    # no outcome to apply: the events are only published
    assert redis.called("finish") == []
    (events,) = redis.called("publish")
    # the start is written, not published: the claim published its RUNNING
    assert [json.loads(data)["type"] for _, _, data in events] == ["JOB_PROGRESS"]
    assert json.loads(events[0][2])["progress"] == 0.5


async def test_recorder_fenced_outcomes(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    # job 1 had ended (its node died after committing the end): that end is published now
    ended = envelope(1)
    pg.add(ended, Status.COMPLETED)
    # job 2 is at a newer attempt: this attempt's outcome is over, with nothing to publish
    pg.add(envelope(2, attempt=2))
    await record_batch(pg, redis, [
        Finished(ended, Outcome.FAILED, error="lease expired"),
        Finished(envelope(2, attempt=1), Outcome.COMPLETED),
    ])
    assert pg.rows["job-1"]["status"] == "COMPLETED" and pg.rows["job-2"]["status"] == "RUNNING"
    assert pg.called("job_states") == [["job-1", "job-2"]]
    ((outcomes, _),) = redis.called("finish")
    by_id = {a.id: a for a in outcomes}
    assert by_id["job-1"].action == "completed"  # the end it had reached, counted in its history
    assert [json.loads(e)["status"] for e in by_id["job-1"].events] == ["COMPLETED"]
    assert (by_id["job-2"].action, by_id["job-2"].events) == ("done", ())


async def test_recorder_retries_through_outages_and_loses_nothing(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    pg.outages.add("record", 3)
    redis.outages.add("finish", 2)
    pool = ExecutorPool(2)
    job = envelope(1)
    pg.add(job)
    pool.hold_lease(job.id, job.attempt, job.tenant_id)
    send, recv = trio.open_memory_channel[Record](10)
    flushed = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda **kw: run_recorder(pg, redis, recv, pool, **kw))
        start = trio.current_time()
        await send.send(Finished(job, Outcome.COMPLETED, result=1))
        await send.send(Flush(flushed))
        with trio.fail_after(30):
            await flushed.wait()
        waited = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert len(pg.called("record")) == 4 and len(redis.called("finish")) == 3  # retried, not dropped
    assert pg.rows["job-1"]["status"] == "COMPLETED"
    # backing off, doubling from 50 ms for each store, not spinning
    assert waited == pytest.approx((0.05 + 0.1 + 0.2) + (0.05 + 0.1))
    assert job.id not in pool.leases


async def test_recorder_fails_an_outcome_that_cannot_be_stored_and_writes_the_others(autojump_clock: Any) -> None:
    pg, redis = FakeJobRows(), FakeDispatch()
    for n in range(4):
        pg.add(envelope(n))
    pg.refused_ids.add("job-2")
    await record_batch(pg, redis, [Finished(envelope(n), Outcome.COMPLETED, result=n) for n in range(4)])
    assert [pg.rows[f"job-{n}"]["status"] for n in range(4)] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
    assert "could not be stored" in pg.rows["job-2"]["error"]


async def _fetcher(
    redis: FakeDispatch, pool: ExecutorPool, draining: trio.Event, nursery: trio.Nursery, size: int = 10
) -> trio.MemoryReceiveChannel[Envelope]:
    send, recv = trio.open_memory_channel[Envelope](size)
    await nursery.start(lambda **kw: run_fetcher(
        redis, pool, send, draining, node_id="n1", lease_ms=30_000, batch=4, **kw))
    return recv


async def test_fetcher_claims_what_the_free_slots_allow_and_blocks_when_dry(autojump_clock: Any) -> None:
    redis, pool, draining = FakeDispatch(), ExecutorPool(3), trio.Event()
    redis.ready = [envelope(n) for n in range(5)]
    async with trio.open_nursery() as nursery:
        jobs = await _fetcher(redis, pool, draining, nursery)
        got = [await jobs.receive() for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert [job.id for job in got] == ["job-0", "job-1", "job-2"]
        assert redis.called("claim") == [3]  # three slots: three claimed, in one call
        assert pool.leases == {"job-0": 1, "job-1": 1, "job-2": 1}
        for job in got:  # the executors finish them
            pool.forget_lease(job.id, job.attempt)
            pool.give_slots(1)
        rest = [await jobs.receive() for _ in range(2)]
        assert [job.id for job in rest] == ["job-3", "job-4"]
        await trio.sleep(0.1)
        # fewer ready than wanted: it waits on the wake-up key instead of polling
        assert redis.called("wait_wake") and redis.called("wait_wake")[0] == WAKE_BLOCK_S
        claims = len(redis.called("claim"))
        await trio.sleep(10 * WAKE_BLOCK_S)
        assert len(redis.called("claim")) <= claims + 11  # one claim per wake-up block at most
        redis.ready = [envelope(9)]
        redis.woken.set()  # an enqueue wakes it: the new job starts at once
        with trio.fail_after(0.01):
            assert (await jobs.receive()).id == "job-9"
        draining.set()
        nursery.cancel_scope.cancel()


async def test_fetcher_runs_inline_jobs_itself_and_hands_the_others_to_the_executors(autojump_clock: Any) -> None:
    registry = Registry()
    registry.register(Handler("sleep", lambda p: [], _never, default_timeout_ms=lambda p: 1000))
    registry.register(Handler("add", lambda p: [], lambda job, p: p["a"] + p["b"], default_timeout_ms=lambda p: 1000, inline=True))
    redis, pool, draining = FakeDispatch(), ExecutorPool(4), trio.Event()
    redis.ready = [envelope(0), _inline(1, {"a": 1, "b": 2}), _inline(2, {"a": "x"}), envelope(3)]
    records_send, records_recv = trio.open_memory_channel[Record](10)
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        jobs_send, jobs_recv = trio.open_memory_channel[Envelope](10)
        inline = InlineJobs(records_send, pool, registry, Config(), metrics)
        await nursery.start(lambda **kw: run_fetcher(
            redis, pool, jobs_send, draining, node_id="n1", lease_ms=30_000, batch=4, inline=inline, **kw))
        await trio.testing.wait_all_tasks_blocked()
        # the sleep jobs went to the executors, in order; the inline ones ran and were recorded
        assert [jobs_recv.receive_nowait().id for _ in range(2)] == ["job-0", "job-3"]
        done = [records_recv.receive_nowait() for _ in range(2)]
        assert [(f.job.id, f.outcome, f.result) for f in done] == [
            ("job-1", Outcome.COMPLETED, 3), ("job-2", Outcome.RETRY, None)]
        assert "KeyError" in (done[1].error or "")
        # their slots are free again; the executors' two are still taken
        assert pool.busy() == 2 and set(pool.leases) == {"job-0", "job-1", "job-2", "job-3"}
        assert metrics.value("conveyor_jobs_finished_total", outcome="completed") == 1
        nursery.cancel_scope.cancel()


async def test_an_inline_job_whose_outcome_cannot_be_handed_over_lets_its_lease_expire(autojump_clock: Any) -> None:
    registry = Registry()
    registry.register(Handler("add", lambda p: [], lambda job, p: 1, default_timeout_ms=lambda p: 1000, inline=True))
    redis, pool, draining = FakeDispatch(), ExecutorPool(2), trio.Event()
    redis.ready = [_inline(1, {}), _inline(2, {})]
    records_send, records_recv = trio.open_memory_channel[Record](0)  # the recorder takes nothing
    async with trio.open_nursery() as nursery:
        jobs_send, _jobs_recv = trio.open_memory_channel[Envelope](10)
        inline = InlineJobs(records_send, pool, registry, Config(), Metrics())
        await nursery.start(lambda **kw: run_fetcher(
            redis, pool, jobs_send, draining, node_id="n1", lease_ms=30_000, batch=2, inline=inline, **kw))
        await trio.testing.wait_all_tasks_blocked()
        assert pool.busy() == 2  # one waits to be recorded, one to be run
        nursery.cancel_scope.cancel()  # e.g. the pipeline restarts
    # neither is held any longer (their leases expire and the reaper runs them again), and
    # every slot is free
    assert pool.leases == {} and pool.busy() == 0


def _inline(n: int, payload: dict[str, Any]) -> Envelope:
    return Envelope(f"job-{n}", "acme", "add", payload, 1, 3, 1000)


async def _never(job: Envelope, payload: dict[str, Any]) -> None:
    await trio.sleep_forever()


async def test_fetcher_waits_out_an_outage_and_claims_after(autojump_clock: Any) -> None:
    redis, pool, draining = FakeDispatch(), ExecutorPool(2), trio.Event()
    redis.ready = [envelope(1)]
    redis.outages.add("claim", 3)
    redis.outages.add("wait_wake", 3)
    async with trio.open_nursery() as nursery:
        jobs = await _fetcher(redis, pool, draining, nursery)
        start = trio.current_time()
        with trio.fail_after(30):
            job = await jobs.receive()
        assert job.id == "job-1" and trio.current_time() - start >= 3.0  # a second per failed wait
        assert pool.busy() == 1 and pool.leases == {"job-1": 1}  # slots given back meanwhile
        nursery.cancel_scope.cancel()


async def test_fetcher_stops_claiming_when_the_node_drains(autojump_clock: Any) -> None:
    redis, pool, draining = FakeDispatch(), ExecutorPool(2), trio.Event()
    async with trio.open_nursery() as nursery:
        await _fetcher(redis, pool, draining, nursery)
        await trio.sleep(0.5)
        draining.set()
        redis.ready = [envelope(1)]
        redis.woken.set()
        await trio.sleep(5)
        claims = len(redis.called("claim"))
        await trio.sleep(5)
        assert len(redis.called("claim")) == claims and redis.ready == [envelope(1)]  # not claimed
        assert pool.busy() == 0
        nursery.cancel_scope.cancel()


async def test_writer_dispatches_a_large_batch_in_parts_in_order(autojump_clock: Any) -> None:
    # Redis runs one script at a time: a part at a time lets claims run between the parts
    pg, redis = FakeJobRows(), FakeDispatch()
    jobs = [new_job(n) for n in range(1007)]
    async with trio.open_nursery() as nursery:
        writer = await _writer(pg, redis, nursery)
        await submit_through(writer, jobs, None)
        nursery.cancel_scope.cancel()
    parts = redis.called("enqueue")
    assert len(parts) >= 4 and all(len(part) <= DISPATCH_CHUNK for part, _ in parts)
    assert [job.id for part, _ in parts for job in part] == [job.id for job in jobs]
    assert [json.loads(e)["jobId"] for _, created in parts for e in created] == [job.id for job in jobs]


class HeldRows(FakeJobRows):
    """Inserts of more than one job wait until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()

    async def insert_jobs(self, submissions: Any, *, retain_s: float = 86_400) -> set[tuple[str, str]]:
        if sum(len(jobs) for _, jobs in submissions) > 1:
            await self.release.wait()
        return await super().insert_jobs(submissions, retain_s=retain_s)


async def test_a_second_writer_writes_a_small_submission_while_a_large_one_is_written(autojump_clock: Any) -> None:
    # as the node runs them (node.WRITERS): two writers on one channel
    pg, redis = HeldRows(), FakeDispatch()
    send, recv = trio.open_memory_channel[Submit](100)
    async with trio.open_nursery() as nursery:
        for _ in range(WRITERS):
            await nursery.start(lambda **kw: run_writer(pg, redis, recv.clone(), Metrics(), lambda t: LIMITS, **kw))
        nursery.start_soon(submit_through, send, [new_job(n, "big") for n in range(1000)], None)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            await submit_through(send, [new_job(5000, "small")], None)  # while the batch is held
        assert set(pg.rows) == {"job-5000"}
        pg.release.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(pg.rows) == 1001
