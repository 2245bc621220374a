"""Maintenance actors shared by all nodes: the scheduler, the reaper and the reconciler.

Each step is an atomic script, so any number of nodes may run them at once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import trio

from ..metrics import Metrics
from ..model import CANCELLED_BY_REQUEST, Finished, Outcome, Record
from ..stores import PostgresStore, RedisStore, StoreUnavailable
from .retry import retrying

log = logging.getLogger(__name__)

PROMOTE_LIMIT = 1000
REAP_LIMIT = 500


async def run_scheduler(
    redis: RedisStore,
    *,
    max_sleep: float = 0.25,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Moves due jobs (delayed submissions, retries) from the delayed set to the ready queues;
    a job is ready at most max_sleep after it is due. First it moves the ready lists of an
    earlier version into the ready queues (upgrade.lua)."""
    task_status.started()
    moved = await retrying("scheduler: upgrade", redis.upgrade, first=1.0, cap=1.0)
    if moved:
        log.warning("scheduler: moved %d ready jobs of an earlier version to the ready queues", moved)
    while True:
        moved, next_due_ms = await retrying("scheduler: promote", redis.promote, PROMOTE_LIMIT, first=1.0, cap=1.0)
        if moved >= PROMOTE_LIMIT:
            continue
        wait = max_sleep if next_due_ms < 0 else min(max_sleep, next_due_ms / 1000)
        await trio.sleep(max(wait, 0.005))


async def run_reaper(
    redis: RedisStore,
    records: trio.MemorySendChannel[Record],
    metrics: Metrics,
    *,
    lease_ms: int,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Takes back jobs whose lease expired and has the recorder write what happened."""
    task_status.started()
    async with records:
        while True:
            try:
                reaped = await redis.reap(REAP_LIMIT, lease_ms=lease_ms)
            except StoreUnavailable as exc:
                log.warning("reaper: %s", exc)
                reaped = []
            for verdict, job in reaped:
                log.warning("job %s attempt %d: lease expired (%s)", job.id, job.attempt, verdict)
                metrics.inc("conveyor_jobs_reaped_total", verdict=verdict)
                if verdict == "requeued":
                    msg = Finished(job, Outcome.REQUEUED, error=f"lease expired (attempt {job.runs[0]})")
                elif verdict == "cancelled":
                    msg = Finished(job, Outcome.CANCELLED, error=CANCELLED_BY_REQUEST)
                else:
                    msg = Finished(
                        job, Outcome.FAILED,
                        error="lease expired on the last attempt ({} of {})".format(*job.runs),
                    )
                await records.send(msg)
            if len(reaped) < REAP_LIMIT:
                await trio.sleep(interval)


async def repair(pg: PostgresStore, redis: RedisStore, rows: list[dict[str, Any]]) -> int:
    """Dispatch again those of these jobs (non-terminal when read) that Redis does not know.

    A job may finish between the read and the check: PostgreSQL is written before its envelope is
    deleted, so reading PostgreSQL again *after* Redis said "unknown" tells a finished job (now
    terminal: leave it) from a lost one (still unfinished: dispatch it) — without this second
    look a job that just completed would run again."""
    unknown = await redis.missing([(row["id"], row["tenant_id"]) for row in rows])
    if not unknown:
        return 0
    return await redis.reconcile(await pg.unfinished_jobs_by_id(unknown))


RECONCILE_PAGE = 1000
RECONCILE_PAGES_PER_TICK = 10
SCAN_START = (datetime(1970, 1, 1, tzinfo=UTC), "00000000-0000-0000-0000-000000000000")


async def run_reconciler(
    pg: PostgresStore,
    redis: RedisStore,
    metrics: Metrics,
    *,
    node_id: str,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Repairs Redis from PostgreSQL, the source of truth: every non-terminal job that Redis does
    not know (its dispatch after commit failed, or Redis lost its data) is dispatched again.

    It walks the non-terminal jobs a bounded number of pages per tick, so a large backlog costs a
    little each tick rather than a lot at once. Only jobs quiet for twice the interval are looked
    at, which leaves the writer's commit-then-dispatch alone. One node at a time does the walk (a
    lock in Redis, for economy: the repair script itself is idempotent).
    """
    task_status.started()
    cursor = SCAN_START
    while True:
        await trio.sleep(interval)
        try:
            if not await redis.try_lock("reconciler", node_id, int(interval * 3000)):
                continue
            for _ in range(RECONCILE_PAGES_PER_TICK):
                rows = await pg.unfinished_jobs(
                    quiet_s=max(2 * interval, 2.0), after=cursor, limit=RECONCILE_PAGE
                )
                repaired = await repair(pg, redis, rows)
                if repaired:
                    log.warning("reconciler: dispatched %d jobs that Redis did not know", repaired)
                    metrics.inc("conveyor_jobs_reconciled_total", repaired)
                if len(rows) < RECONCILE_PAGE:
                    cursor = SCAN_START
                    break
                cursor = (rows[-1]["updated_at"], rows[-1]["id"])
        except StoreUnavailable as exc:
            log.warning("reconciler: %s", exc)
