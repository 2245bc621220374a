"""An executor: runs claimed jobs one at a time; the pool is N of these on one channel.

It bounds each attempt by its timeout with a cancel scope, turns the handler's outcome into a
Finished message for the recorder (retry with backoff, or the end), and gives its slot back.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .. import rules, storable
from ..config import Config
from ..handlers import Handler, JobFailed, Registry
from ..metrics import Histogram, Metrics
from ..model import CANCELLED_BY_REQUEST, Envelope, Finished, Outcome, Record, Started
from ..progress import Flusher
from .pool import CancelReason, ExecutorPool

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024
MAX_ERROR_CHARS = 4000


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose message cannot be built must not stop the executor
        return f"(a {type(exc).__name__} whose message could not be read)"


def encoded_result(result: Any) -> str | None:
    """A handler's result as the JSON text that is stored (None for None). It must be storable
    JSON of at most MAX_RESULT_BYTES; JobFailed, not to be retried, when it is not: the job ran,
    and would return the same."""
    if result is None:  # what many handlers return
        return None
    found = storable.problem(result, "result")
    if found is not None:
        raise JobFailed(f"the handler's result cannot be stored: {found[0]} {found[1]}", retryable=False)
    text = storable.dumps(result)
    if len(text) > MAX_RESULT_BYTES:
        raise JobFailed(
            f"the handler's result is {len(text)} bytes of JSON, more than the limit of {MAX_RESULT_BYTES}",
            retryable=False,
        )
    return text


RAN = frozenset({Outcome.COMPLETED, Outcome.FAILED, Outcome.RETRY, Outcome.CANCELLED})  # the handler ran


class JobCounts:
    """An executor's metrics, their keys made once: it counts and times every job."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.started = metrics.key("conveyor_jobs_started_total")
        self.finished = {o: metrics.key("conveyor_jobs_finished_total", outcome=o.value) for o in Outcome}
        self._by_type: dict[str, tuple[Histogram, Histogram]] = {}

    def histograms(self, job_type: str) -> tuple[Histogram, Histogram]:
        """(queue wait, run time) of a job type."""
        if (found := self._by_type.get(job_type)) is None:
            found = self._by_type[job_type] = (
                self.metrics.histogram("conveyor_job_queue_wait_seconds", type=job_type),
                self.metrics.histogram("conveyor_job_run_seconds", type=job_type),
            )
        return found


async def run_executor(
    jobs: trio.MemoryReceiveChannel[Envelope],
    records: trio.MemorySendChannel[Record],
    pool: ExecutorPool,
    registry: Registry,
    config: Config,
    metrics: Metrics,
    flusher: Flusher,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    counts = JobCounts(metrics)

    async def run(job: Envelope) -> Finished:
        return await execute(job, records, pool, registry, config, counts, flusher)

    task_status.started()
    async with jobs, records:
        while True:
            try:
                job = await _next(jobs)
            except trio.EndOfChannel:
                return
            await attempt(job, records, pool, counts, run)


async def attempt(
    job: Envelope,
    records: trio.MemorySendChannel[Record],
    pool: ExecutorPool,
    counts: JobCounts,
    run: Callable[[Envelope], Awaitable[Finished]],
) -> None:
    """One attempt of a claimed job, whose slot and lease the caller hands over: `run` gives its
    outcome, which goes to the recorder, and the slot goes back to the pool."""
    delivered = False
    try:
        waited, ran = counts.histograms(job.type)
        if job.waited_ms >= 0:
            waited.observe(job.waited_ms / 1000)
        began = trio.current_time()
        finished = await run(job)
        await _send(records, finished)
        delivered = True
        counts.metrics.add(counts.finished[finished.outcome])
        if finished.outcome in RAN:
            ran.observe(trio.current_time() - began)
    finally:
        if not delivered:
            # cancelled before the recorder had the outcome (the pool is restarting):
            # let the lease expire so that the reaper gives the job another attempt
            pool.forget_lease(job.id, job.attempt)
        pool.give_slots(1)


class InlineJobs:
    """Claimed jobs whose handler is inline (Handler.inline), run where the fetcher hands them
    over instead of by an executor: no task switch a job. They return at once by contract, so
    the claim loop is not held up; their outcomes go to the recorder as the executors' do."""

    def __init__(
        self, records: trio.MemorySendChannel[Record], pool: ExecutorPool, registry: Registry,
        config: Config, metrics: Metrics,
    ) -> None:
        self.records = records
        self.pool = pool
        self.registry = registry
        self.config = config
        self.counts = JobCounts(metrics)

    async def __aenter__(self) -> InlineJobs:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.records.aclose()

    def takes(self, job: Envelope) -> bool:
        handler = self.registry.get(job.type)
        return handler is not None and handler.inline and not self.pool.handing_back

    async def run(self, job: Envelope) -> None:
        """One attempt of a job `takes` accepted; its slot and lease are handed over."""
        await attempt(job, self.records, self.pool, self.counts, self._execute)

    async def _execute(self, job: Envelope) -> Finished:
        handler = self.registry.get(job.type)
        assert handler is not None
        return _execute_inline(job, handler, self.config, self.counts)


async def _next(jobs: trio.MemoryReceiveChannel[Envelope]) -> Envelope:
    """The next job: one waiting in the channel without a trip through the scheduler (the
    handler yields at its awaits, and the fetcher claims only as many jobs as there are free
    slots, so this never runs more than the pool's size of jobs in a row), else wait for one."""
    try:
        return jobs.receive_nowait()
    except trio.WouldBlock:
        return await jobs.receive()


async def _send(records: trio.MemorySendChannel[Record], record: Record) -> None:
    """To the recorder, without a trip through the scheduler while its channel has room (the
    executor yields in its handler): two fewer task switches a job."""
    try:
        records.send_nowait(record)
    except trio.WouldBlock:
        await records.send(record)


async def execute(
    job: Envelope,
    records: trio.MemorySendChannel[Record],
    pool: ExecutorPool,
    registry: Registry,
    config: Config,
    counts: JobCounts,
    flusher: Flusher,
) -> Finished:
    if pool.handing_back:
        return Finished(job, Outcome.HANDBACK)
    handler = registry.get(job.type)
    if handler is not None and handler.inline:
        return _execute_inline(job, handler, config, counts)
    await _send(records, Started(job))
    counts.metrics.add(counts.started)
    result: Any = None
    result_json: str | None = None
    error: str | None = None
    retryable = True
    # the deadline given to the scope, not set on it once entered: a fifth of execute's time
    with trio.CancelScope(deadline=trio.current_time() + job.timeout_ms / 1000) as scope:
        pool.started(job.id, job.attempt, scope)
        try:
            if handler is None:
                raise JobFailed(f"no handler for job type {job.type!r} on this node")
            with flusher.reporting(job):
                result = await handler.run(job, job.payload)
            result_json = encoded_result(result)  # encoded once: the recorder writes this text
        except JobFailed as exc:
            error, retryable = _describe(exc), exc.retryable
        except Exception as exc:
            log.warning("job %s attempt %d raised", job.id, job.attempt, exc_info=True)
            error = f"{type(exc).__name__}: {_describe(exc)}"
    reason = pool.stopped(job.id, job.attempt)
    if scope.cancelled_caught:
        if reason is CancelReason.DRAIN:
            return Finished(job, Outcome.HANDBACK)
        if reason is CancelReason.LOST:
            return Finished(job, Outcome.LOST)
        if reason is CancelReason.CANCEL:
            return Finished(job, Outcome.CANCELLED, error=CANCELLED_BY_REQUEST)
        error = f"timed out after {job.timeout_ms} ms"
    if error is None:
        return Finished(job, Outcome.COMPLETED, result=result, result_json=result_json)
    return _failed(job, error, retryable, config)


def _execute_inline(job: Envelope, handler: Handler, config: Config, counts: JobCounts) -> Finished:
    """An inline handler's attempt (Handler.inline): called in place, with no cancel scope (nothing
    could interrupt it) and no Started record (its start is written with its end, as the recorder
    writes an attempt that started and ended within one batch)."""
    counts.metrics.add(counts.started)
    try:
        result = handler.run(job, job.payload)
        result_json = encoded_result(result)
    except JobFailed as exc:
        return _failed(job, _describe(exc), exc.retryable, config)
    except Exception as exc:
        log.warning("job %s attempt %d raised", job.id, job.attempt, exc_info=True)
        return _failed(job, f"{type(exc).__name__}: {_describe(exc)}", True, config)
    return Finished(job, Outcome.COMPLETED, result=result, result_json=result_json)


def _failed(job: Envelope, error: str, retryable: bool, config: Config) -> Finished:
    """A failed attempt: retried after a backoff while attempts are left and it may be, else the
    job's end."""
    outcome = rules.after_failure(job.attempt, job.max_attempts) if retryable else Outcome.FAILED
    delay = 0
    if outcome is Outcome.RETRY:
        delay = rules.backoff_ms(
            job.attempt, base_ms=config.backoff_base_ms, cap_ms=config.backoff_cap_ms,
            rand=random.random,
        )
    # the message may quote what a handler or a remote server said: keep it storable
    return Finished(job, outcome, error=storable.clean_text(error, MAX_ERROR_CHARS), delay_ms=delay)
