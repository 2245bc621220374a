"""The writer: group commit of submissions.

HTTP handlers send a Submit and await its reply; the writer takes every Submit waiting, writes
them with one INSERT, dispatches them with one Redis call, then answers each. It never answers
success for a job whose row is not committed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ..limits import TenantLimits, refusal
from ..metrics import Metrics
from ..model import NewJob
from ..stores import PostgresStore, RedisStore, StoreUnavailable

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 5000


@attrs.frozen
class Submit:
    jobs: tuple[NewJob, ...]
    reply: trio.MemorySendChannel[BaseException | None]


def _answer(reply: trio.MemorySendChannel[Any], value: BaseException | None) -> None:
    try:
        reply.send_nowait(value)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        pass  # the caller went away (client disconnected); the outcome stands


async def run_writer(
    pg: PostgresStore,
    redis: RedisStore,
    requests: trio.MemoryReceiveChannel[Submit],
    metrics: Metrics,
    limits_of: Callable[[str], TenantLimits],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    async with requests:
        while True:
            batch = [await requests.receive()]
            rows = len(batch[0].jobs)
            while rows < MAX_BATCH_ROWS:
                try:
                    batch.append(requests.receive_nowait())
                except trio.WouldBlock:
                    break
                rows += len(batch[-1].jobs)
            batch = await admit(redis, batch, limits_of, metrics)
            if not batch:
                continue
            jobs = [job for submit in batch for job in submit.jobs]
            try:
                await pg.insert_jobs(jobs)
                metrics.inc("conveyor_jobs_submitted_total", len(jobs))
            except Exception as exc:
                if not isinstance(exc, StoreUnavailable):
                    log.exception("insert of %d jobs failed", len(jobs))
                for submit in batch:
                    _answer(submit.reply, exc)
                continue
            try:
                await redis.enqueue(jobs)
            except Exception:
                # The rows are committed, so the submit succeeded; the reconciler dispatches
                # them from PostgreSQL once Redis answers again.
                log.exception("committed %d jobs but could not dispatch them", len(jobs))
            for submit in batch:
                _answer(submit.reply, None)


async def admit(
    redis: RedisStore,
    batch: list[Submit],
    limits_of: Callable[[str], TenantLimits],
    metrics: Metrics,
) -> list[Submit]:
    """Check a batch against its tenants' queue caps and rate limits in one Redis call; answer
    the refused submissions (429) and return the admitted ones. While Redis cannot answer,
    everything is admitted: losing a limit briefly is better than refusing work."""
    requests = []
    owners = []
    for submit in batch:
        for tenant, count in Counter(job.tenant_id for job in submit.jobs).items():
            lim = limits_of(tenant)
            requests.append((tenant, count, lim.submit_rate, lim.submit_burst, lim.max_queued))
            owners.append(submit)
    if not any(rate > 0 or queued > 0 for _, _, rate, _, queued in requests):
        return batch
    try:
        verdicts = await redis.admit(requests)
    except StoreUnavailable as exc:
        log.warning("admission skipped: %s", exc)
        return batch
    refused: dict[int, BaseException] = {}
    for submit, (tenant, count, *_), (verdict, wait_ms) in zip(owners, requests, verdicts, strict=True):
        if verdict != "ok" and id(submit) not in refused:
            refused[id(submit)] = refusal(verdict, tenant, count, limits_of(tenant), wait_ms)
            metrics.inc("conveyor_submissions_limited_total", 1, reason=verdict)
    for submit in batch:
        if id(submit) in refused:
            _answer(submit.reply, refused[id(submit)])
    return [submit for submit in batch if id(submit) not in refused]
