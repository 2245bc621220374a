"""The recorder: writes job state transitions in batches, fenced by attempt, then publishes them.

Per batch: one PostgreSQL transaction (all starts, all outcomes; a job that started and finished
inside one batch is written once), then one Redis script that applies the outcomes to the
dispatch index and appends the events. PostgreSQL first, so a crash in between leaves a lease
that the reaper takes back, never a job that Redis forgot and PostgreSQL still calls RUNNING.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from .. import rules
from ..model import TERMINAL, Finished, Flush, Outcome, Progress, Started
from ..stores import PostgresStore, RedisStore, StoreUnavailable
from ..wire import job_progress, job_update
from .pool import ExecutorPool

log = logging.getLogger(__name__)

MAX_BATCH = 2000
# Redis action for an outcome PostgreSQL accepted; a refused one only drops our lease.
ACTIONS = {
    Outcome.COMPLETED: "done",
    Outcome.FAILED: "done",
    Outcome.RETRY: "retry",
    Outcome.HANDBACK: "handback",
    Outcome.REQUEUED: "none",
    Outcome.CANCELLED: "done",
}


async def run_recorder(
    pg: PostgresStore,
    redis: RedisStore,
    records: trio.MemoryReceiveChannel[Any],
    pool: ExecutorPool,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    async with records:
        while True:
            batch = [await records.receive()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(records.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await record_batch(pg, redis, batch)
            finally:
                # Written or not, this node stops holding these leases: if the batch was lost
                # (a crash), the leases expire and the reaper gives the jobs another attempt.
                for msg in batch:
                    if isinstance(msg, Finished):
                        pool.forget_lease(msg.job.id, msg.job.attempt)
            for msg in batch:
                if isinstance(msg, Flush):
                    msg.done.set()


async def _retrying(what: str, fn: Any, *args: Any) -> Any:
    delay = 0.05
    while True:
        try:
            return await fn(*args)
        except StoreUnavailable as exc:
            log.warning("recorder: %s failed, retrying in %.2fs: %s", what, delay, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def record_batch(pg: PostgresStore, redis: RedisStore, batch: list[Any]) -> None:
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
        (p.job.tenant_id, json.dumps(job_progress(p.job, p.progress, p.message)))
        for key, p in progress.items() if key not in finishes
    ]
    if not starts and not finishes:
        if reports:
            await _retrying("Redis publish", redis.publish, reports)
        return
    # Coalesce: an attempt that started and finished in this batch is written once, finished.
    start_rows = [key for key in starts if key not in finishes]
    finish_rows = [
        {
            "id": f.job.id,
            "attempt": f.job.attempt,
            "new_attempt": f.job.attempt - 1 if f.outcome is Outcome.HANDBACK else f.job.attempt,
            "status": rules.status_of(f.outcome).value,
            "error": f.error,
            "result": f.result,
            "delay_ms": f.delay_ms,
        }
        for f in finishes.values()
    ]
    started, finished = await _retrying("PostgreSQL write", pg.record, start_rows, finish_rows)
    # an accepted outcome may still have ended the job (a cancellation requested meanwhile)
    written = {row["id"]: row["status"] for row in finished}
    actions = [
        (
            f.job.id, f.job.attempt,
            ACTIONS[f.outcome] if written.get(f.job.id, "COMPLETED") not in TERMINAL else "done",
            f.delay_ms,
        )
        for f in finishes.values()
    ]
    events = [(row["tenant_id"], json.dumps(job_update(row))) for row in started]
    events += reports
    for row in finished:
        if (row["id"], row["attempts"]) in starts:
            # started and finished within this batch: written once, but the feed still hears
            # the RUNNING that PostgreSQL never stored
            running = {**row, "status": "RUNNING", "error": None}
            events.append((row["tenant_id"], json.dumps(job_update(running))))
        events.append((row["tenant_id"], json.dumps(job_update(row))))
    await _retrying("Redis finish", redis.finish, actions, events)
