"""An executor: runs claimed jobs one at a time; the pool is N of these on one channel.

It bounds each attempt by its timeout with a cancel scope, turns the handler's outcome into a
Finished message for the recorder (retry with backoff, or the end), and gives its slot back.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import trio

from .. import rules
from ..config import Config
from ..handlers import JobFailed, Registry
from ..metrics import Metrics
from ..model import Envelope, Finished, Outcome, Started
from ..progress import Flusher
from .pool import CancelReason, ExecutorPool

log = logging.getLogger(__name__)

CANCELLED_ERROR = "cancelled by request"


async def run_executor(
    jobs: trio.MemoryReceiveChannel[Envelope],
    records: trio.MemorySendChannel[Any],
    pool: ExecutorPool,
    registry: Registry,
    config: Config,
    metrics: Metrics,
    flusher: Flusher,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    async with jobs, records:
        async for job in jobs:
            delivered = False
            try:
                finished = await execute(job, records, pool, registry, config, metrics, flusher)
                await records.send(finished)
                delivered = True
                metrics.inc("conveyor_jobs_finished_total", outcome=finished.outcome.value)
            finally:
                if not delivered:
                    # cancelled before the recorder had the outcome (the pool is restarting):
                    # let the lease expire so that the reaper gives the job another attempt
                    pool.forget_lease(job.id, job.attempt)
                pool.give_slots(1)


async def execute(
    job: Envelope,
    records: trio.MemorySendChannel[Any],
    pool: ExecutorPool,
    registry: Registry,
    config: Config,
    metrics: Metrics,
    flusher: Flusher,
) -> Finished:
    if pool.handing_back:
        return Finished(job, Outcome.HANDBACK)
    await records.send(Started(job))
    metrics.inc("conveyor_jobs_started_total")
    handler = registry.get(job.type)
    result: Any = None
    error: str | None = None
    retryable = True
    with trio.CancelScope() as scope:
        pool.started(job.id, job.attempt, scope)
        scope.deadline = trio.current_time() + job.timeout_ms / 1000
        try:
            if handler is None:
                raise JobFailed(f"no handler for job type {job.type!r} on this node")
            with flusher.reporting(job):
                result = await handler.run(job, job.payload)
            json.dumps(result)  # a result that cannot be stored is the handler's failure
        except JobFailed as exc:
            error, retryable = str(exc), exc.retryable
        except Exception as exc:
            log.warning("job %s attempt %d raised", job.id, job.attempt, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
    reason = pool.stopped(job.id, job.attempt)
    if scope.cancelled_caught:
        if reason is CancelReason.DRAIN:
            return Finished(job, Outcome.HANDBACK)
        if reason is CancelReason.LOST:
            return Finished(job, Outcome.LOST)
        if reason is CancelReason.CANCEL:
            return Finished(job, Outcome.CANCELLED, error=CANCELLED_ERROR)
        error = f"timed out after {job.timeout_ms} ms"
    if error is None:
        return Finished(job, Outcome.COMPLETED, result=result)
    outcome = rules.after_failure(job.attempt, job.max_attempts) if retryable else Outcome.FAILED
    delay = 0
    if outcome is Outcome.RETRY:
        delay = rules.backoff_ms(
            job.attempt, base_ms=config.backoff_base_ms, cap_ms=config.backoff_cap_ms,
            rand=random.random,
        )
    return Finished(job, outcome, error=error[:4000], delay_ms=delay)
