"""Maintenance actors shared by all nodes: the scheduler and the reaper.

Both are single atomic scripts, so any number of nodes may run them at once.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..metrics import Metrics
from ..model import Finished, Outcome
from ..stores import RedisStore, StoreUnavailable

log = logging.getLogger(__name__)

PROMOTE_LIMIT = 1000
REAP_LIMIT = 500


async def run_scheduler(
    redis: RedisStore,
    *,
    max_sleep: float = 0.25,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Moves due retries from the delayed set to the ready queues."""
    task_status.started()
    while True:
        try:
            moved, next_due_ms = await redis.promote(PROMOTE_LIMIT)
        except StoreUnavailable as exc:
            log.warning("scheduler: %s", exc)
            await trio.sleep(1.0)
            continue
        if moved >= PROMOTE_LIMIT:
            continue
        wait = max_sleep if next_due_ms < 0 else min(max_sleep, next_due_ms / 1000)
        await trio.sleep(max(wait, 0.005))


async def run_reaper(
    redis: RedisStore,
    records: trio.MemorySendChannel[Any],
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
                    msg = Finished(job, Outcome.REQUEUED, error=f"lease expired (attempt {job.attempt})")
                else:
                    msg = Finished(
                        job, Outcome.FAILED,
                        error=f"lease expired on the last attempt ({job.attempt} of {job.max_attempts})",
                    )
                await records.send(msg)
            if len(reaped) < REAP_LIMIT:
                await trio.sleep(interval)
