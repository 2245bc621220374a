"""The recorder: writes job state transitions in batches, fenced by attempt, then publishes them.

Per batch: one PostgreSQL transaction (all starts, all outcomes; a job that started and finished
inside one batch is written once), then one Redis script that applies the outcomes to the
dispatch index and appends the events. PostgreSQL first, so a crash in between leaves a lease
that the reaper takes back, never a job that Redis forgot and PostgreSQL still calls RUNNING.
The two stages overlap: while batch N goes to Redis, batch N+1 is written to PostgreSQL; each
store still sees the batches one at a time and in order, so a job's events keep their order.

A start is written to PostgreSQL, not published: the claim script published its RUNNING event
before the job reached an executor. An outcome's events travel with its Redis action, which
applies only while the envelope is at that attempt. An outcome that PostgreSQL refused because
the job had ended already (its node died after committing the end, before telling Redis; the
reaper sends such jobs here) carries that end's event, read from the row: it is published once,
by whichever call drops the envelope, and the job does not run again. A batch that PostgreSQL
refuses for one outcome's values is cut until that outcome is found, which is then written as
FAILED, saying why.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import trio

from .. import faults, rules, storable
from ..failures import DataRefused
from ..model import TERMINAL, Finished, Flush, Outcome, Progress, Record, Started
from ..stores.protocols import Dispatch, JobRows
from ..stores.redis import Applied
from ..wire import job_progress, job_update
from .batches import write_isolating
from .pool import ExecutorPool
from .retry import retrying

log = logging.getLogger(__name__)

MAX_BATCH = 2000


@attrs.frozen
class Written:
    """A batch whose PostgreSQL transaction committed, with what Redis must do for it."""

    batch: list[Record]
    outcomes: list[Applied]
    events: list[tuple[str, str, str]]  # (tenant, job id, event json) to publish besides
    ended: bool = False  # some job ended in this batch


async def run_recorder(
    pg: JobRows,
    redis: Dispatch,
    records: trio.MemoryReceiveChannel[Record],
    pool: ExecutorPool,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # unbuffered: one batch in PostgreSQL while the one before it is in Redis, no more
    to_redis, written = trio.open_memory_channel[Written](0)
    async with records, trio.open_nursery() as nursery:
        nursery.start_soon(_run_publisher, redis, written, pool)
        task_status.started()
        async with to_redis:
            while True:
                batch = [await records.receive()]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(records.receive_nowait())
                    except trio.WouldBlock:
                        break
                handed = False
                try:
                    await to_redis.send(await write_batch(pg, batch))
                    handed = True
                finally:
                    if not handed:
                        _release(pool, batch)


async def _run_publisher(redis: Dispatch, written: trio.MemoryReceiveChannel[Written], pool: ExecutorPool) -> None:
    async with written:
        async for done in written:
            try:
                await publish_written(redis, done)
            finally:
                _release(pool, done.batch)
            for msg in done.batch:
                if isinstance(msg, Flush):
                    msg.done.set()


def _release(pool: ExecutorPool, batch: list[Any]) -> None:
    """Written or not, this node stops holding these leases: if the batch was lost (a crash),
    the leases expire and the reaper gives the jobs another attempt."""
    for msg in batch:
        if isinstance(msg, Finished):
            pool.forget_lease(msg.job.id, msg.job.attempt)


async def record_batch(pg: JobRows, redis: Dispatch, batch: list[Any]) -> None:
    """Both stages for one batch: PostgreSQL, then Redis."""
    await publish_written(redis, await write_batch(pg, batch))


async def publish_written(redis: Dispatch, done: Written) -> None:
    if done.ended:
        faults.point("exit-after-record")  # ends committed, Redis not told: the reaper's case
    if done.outcomes:
        await retrying("recorder: Redis finish", redis.finish, done.outcomes, done.events)
    elif done.events:  # starts and progress only: nothing to apply to the dispatch index
        await retrying("recorder: Redis publish", redis.publish, done.events)


async def write_batch(pg: JobRows, batch: list[Any]) -> Written:
    """The PostgreSQL stage: write the batch's starts and outcomes in one transaction; what Redis
    must do for them."""
    starts: dict[tuple[str, int], Started] = {}
    finishes: dict[tuple[str, int], Finished] = {}
    progress: dict[tuple[str, int], Progress] = {}
    for msg in batch:
        if isinstance(msg, Started):
            starts[(msg.job.id, msg.job.attempt)] = msg
        elif isinstance(msg, Finished) and msg.outcome is not Outcome.LOST:
            finishes[(msg.job.id, msg.job.attempt)] = msg
        elif isinstance(msg, Progress):
            progress[(msg.job.id, msg.job.attempt)] = msg  # the latest report wins
    # a report of an attempt that ended in this batch says nothing the end does not
    reports = [
        (p.job.tenant_id, p.job.id, json.dumps(job_progress(p.job, p.progress, p.message)))
        for key, p in progress.items() if key not in finishes
    ]
    if not starts and not finishes:
        return Written(batch, [], reports)
    # Coalesce: an attempt that started and finished in this batch is written once, finished.
    start_rows = [key for key in starts if key not in finishes]
    _, finished = await _write(pg, start_rows, [_finish_row(f) for f in finishes.values()])
    written = {row["id"]: row for row in finished}
    refused = [f.job.id for f in finishes.values() if f.job.id not in written]
    ended: dict[str, dict[str, Any]] = {}
    if refused:
        states = await retrying("recorder: PostgreSQL read", pg.job_states, refused)
        ended = {row["id"]: row for row in states if row["status"] in TERMINAL}
    outcomes = [_applied(f, written.get(f.job.id), ended.get(f.job.id)) for f in finishes.values()]
    return Written(batch, outcomes, reports, any(row["status"] in TERMINAL for row in finished))


def _finish_row(f: Finished) -> dict[str, Any]:
    return {
        "id": f.job.id,
        "attempt": f.job.attempt,
        "new_attempt": f.job.attempt - 1 if f.outcome is Outcome.HANDBACK else f.job.attempt,
        "status": rules.status_of(f.outcome).value,
        "error": f.error,
        "result": f.result,
        "result_json": f.result_json,  # the result encoded already, if the executor did
        "delay_ms": f.delay_ms,
    }


def _applied(f: Finished, row: dict[str, Any] | None, ended: dict[str, Any] | None) -> Applied:
    """What Redis does with an outcome, given the row PostgreSQL wrote (None: it refused) and,
    when refused, the row of the end the job had reached already."""
    if row is not None:
        # an accepted outcome may still have ended the job (a cancellation requested meanwhile)
        action = rules.index_action(f.outcome) if row["status"] not in TERMINAL else rules.end_action(row["status"])
        return Applied(f.job.tenant_id, f.job.id, f.job.attempt, action, f.delay_ms, (row["event"],))
    if ended is not None:
        # The job had ended. If its envelope is still at this attempt, that end was never
        # published (only the call that drops the envelope publishes it): publish it now.
        return Applied(f.job.tenant_id, f.job.id, f.job.attempt, rules.end_action(ended["status"]), 0, (json.dumps(job_update(ended)),))
    return Applied(f.job.tenant_id, f.job.id, f.job.attempt, "done")  # a newer attempt holds it: this one is over


async def _write(
    pg: JobRows, starts: list[tuple[str, int]], finishes: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """pg.record, with the batch cut apart when PostgreSQL refuses some outcome's values."""
    try:
        return await retrying("recorder: PostgreSQL write", pg.record, starts, finishes)
    except DataRefused as exc:
        log.error("recorder: PostgreSQL refused a batch of %d outcomes (%s); finding which", len(finishes), exc)
    started, _ = await retrying("recorder: PostgreSQL write", pg.record, starts, [])

    async def write(part: Any) -> list[dict[str, Any]]:
        return (await retrying("recorder: PostgreSQL write", pg.record, [], list(part)))[1]

    results, refused = await write_isolating(finishes, write)
    finished = [row for rows in results for row in rows]
    if refused:
        failed = []
        for row, why in refused:
            log.error("recorder: job %s attempt %d: outcome refused (%s)", row["id"], row["attempt"], why)
            message = storable.clean_text(f"the job's outcome could not be stored: {why}", 4000)
            failed.append({**row, "new_attempt": row["attempt"], "status": "FAILED", "error": message,
                           "result": None, "result_json": None, "delay_ms": 0})
        finished += (await retrying("recorder: PostgreSQL write", pg.record, [], failed))[1]
    return started, finished
