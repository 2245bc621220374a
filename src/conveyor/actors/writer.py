"""The writer: group commit of submissions.

HTTP handlers send a Submit and await its reply; the writer takes every Submit waiting, writes
them with one INSERT, dispatches them with one Redis call, then answers each. It never answers
success for a job whose row is not committed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from .. import faults
from ..failures import Busy, StoreUnavailable
from ..handlers import FieldError
from ..limits import Limited, TenantLimits, refusal
from ..metrics import Metrics
from ..model import Envelope, NewJob
from ..stores.postgres import IdempotencyKey
from ..stores.protocols import Dispatch, JobRows
from ..validation import Invalid
from ..wire import created_events
from .batches import write_isolating
from .handoff import LocalClaims

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 5000
# a batch's payloads are copied a few times on their way into one INSERT and one script call:
# more bytes than this wait for the next batch
MAX_BATCH_BYTES = 4 * 1024 * 1024
# writers a node runs on its one channel: while one writes a large batch (its insert and dispatch
# take tens of milliseconds), another writes the submissions that came meanwhile, which otherwise
# waited for all of it (another tenant's submit p99 went from 5 to 50 ms: bench/batches.py)
WRITERS = 2
# jobs per dispatch script call: Redis runs a script alone, and one of 2,000 jobs held every
# claim (and so every executor) of the shard for about 30 ms
DISPATCH_CHUNK = 250


@attrs.frozen
class Submit:
    jobs: tuple[NewJob, ...]
    reply: trio.MemorySendChannel[BaseException | None]
    idempotency: IdempotencyKey | None = None


class AlreadySubmitted(Exception):
    """The submission's Idempotency-Key was taken by an earlier request: nothing was written."""


SUBMIT_TIMEOUT_S = 30.0


async def submit_through(
    writer: trio.MemorySendChannel[Submit], jobs: list[NewJob], idempotency: IdempotencyKey | None
) -> None:
    """Have the writer commit and dispatch jobs; returns once their rows are committed.

    Raises the writer's answer (StoreUnavailable, Limited, Invalid, or AlreadySubmitted when
    the idempotency key was taken by an earlier request), and Busy when its queue is full."""
    reply_send, reply_recv = trio.open_memory_channel[BaseException | None](1)
    try:
        writer.send_nowait(Submit(tuple(jobs), reply_send, idempotency))
    except trio.WouldBlock:
        raise Busy("too many submissions waiting to be written") from None
    async with reply_recv:
        with trio.fail_after(SUBMIT_TIMEOUT_S):
            failure = await reply_recv.receive()
    if isinstance(failure, StoreUnavailable | Limited | AlreadySubmitted | Invalid):
        raise failure  # the writer's answer, as it gave it
    if failure is not None:
        raise RuntimeError(f"submission failed: {failure!r}")


def _bytes(submit: Submit) -> int:
    return sum(len(job.payload_json) for job in submit.jobs)


def _answer(reply: trio.MemorySendChannel[Any], value: BaseException | None) -> None:
    try:
        reply.send_nowait(value)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        pass  # the caller went away (client disconnected); the outcome stands


async def run_writer(
    pg: JobRows,
    redis: Dispatch,
    requests: trio.MemoryReceiveChannel[Submit],
    metrics: Metrics,
    limits_of: Callable[[str], TenantLimits],
    *,
    retain_s: float = 86_400,
    local: LocalClaims | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`local`: claim along with the dispatch for this node's idle executors (handoff.py)."""
    task_status.started()
    async with requests:
        while True:
            batch = [await requests.receive()]
            rows, size = len(batch[0].jobs), _bytes(batch[0])
            while rows < MAX_BATCH_ROWS and size < MAX_BATCH_BYTES:
                try:
                    batch.append(requests.receive_nowait())
                except trio.WouldBlock:
                    break
                rows, size = rows + len(batch[-1].jobs), size + _bytes(batch[-1])
            batch = await admit(redis, batch, limits_of, metrics)
            if not batch:
                continue
            # a key twice in one batch: the first submission carries it, the others replay it
            seen: set[tuple[str, str]] = set()
            duplicates: list[Submit] = []
            writes: list[Submit] = []
            for submit in batch:
                key = submit.idempotency
                if key is not None and (key.tenant, key.key) in seen:
                    duplicates.append(submit)
                    continue
                if key is not None:
                    seen.add((key.tenant, key.key))
                writes.append(submit)
            try:
                taken, refused = await _insert(pg, writes, retain_s)
            except Exception as exc:
                if not isinstance(exc, StoreUnavailable):  # a bug: its submitters get a 500
                    log.exception("insert of %d submissions failed", len(writes))
                for submit in batch:
                    _answer(submit.reply, exc)
                continue
            for submit, why in refused:
                _answer(submit.reply, why)
            gone = {id(submit) for submit, _ in refused}
            writes = [submit for submit in writes if id(submit) not in gone]
            written, lost = _split(writes, taken)
            duplicates += lost
            jobs = [job for submit in written for job in submit.jobs]
            metrics.inc("conveyor_jobs_submitted_total", len(jobs))
            faults.point("exit-after-commit")
            try:
                if jobs:
                    await _dispatch(redis, jobs, local)
            except Exception:
                # The rows are committed, so the submit succeeded; the reconciler dispatches
                # them from PostgreSQL once Redis answers again.
                log.exception("committed %d jobs but could not dispatch them", len(jobs))
            for submit in written:
                _answer(submit.reply, None)
            for submit in duplicates:
                _answer(submit.reply, AlreadySubmitted())


async def _dispatch(redis: Dispatch, jobs: list[NewJob], local: LocalClaims | None) -> None:
    """Dispatch committed jobs DISPATCH_CHUNK at a time, in order, each part in a script call of
    its own, so that claims run between them; the first claims some along for this node when its
    fetcher is idle."""
    for start in range(0, len(jobs), DISPATCH_CHUNK):
        part = jobs[start : start + DISPATCH_CHUNK]
        events = created_events(part)
        if start or local is None or not redis.claims_on_enqueue or (ask := local.reserve(len(part))) is None:
            await redis.enqueue(part, events)
            continue
        claimed: list[Envelope] = []
        try:
            claimed = await redis.enqueue_claiming(part, events, ask)
        finally:
            local.deliver(ask, claimed)


async def _insert(
    pg: JobRows, writes: list[Submit], retain_s: float
) -> tuple[set[tuple[str, str]], list[tuple[Submit, Invalid]]]:
    """Insert the submissions, keeping the ones PostgreSQL refuses from failing the others:
    the idempotency keys taken, and the refused submissions with their 400."""

    async def insert(part: Sequence[Submit]) -> set[tuple[str, str]]:
        return await pg.insert_jobs([(s.idempotency, s.jobs) for s in part], retain_s=retain_s)

    results, refused = await write_isolating(writes, insert)
    answers = []
    for submit, exc in refused:
        log.warning("a submission of %d jobs was refused by PostgreSQL: %s", len(submit.jobs), exc)
        answers.append((submit, Invalid("Validation failed", [FieldError("body", f"cannot be stored: {exc}")])))
    taken: set[tuple[str, str]] = set().union(*results)
    return taken, answers


def _split(writes: list[Submit], taken: set[tuple[str, str]]) -> tuple[list[Submit], list[Submit]]:
    """The submissions that were written, and those whose idempotency key was held already."""
    written: list[Submit] = []
    lost: list[Submit] = []
    for submit in writes:
        key = submit.idempotency
        (written if key is None or (key.tenant, key.key) in taken else lost).append(submit)
    return written, lost


async def admit(
    redis: Dispatch,
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
        sizes: Counter[str] = Counter()
        for job in submit.jobs:
            sizes[job.tenant_id] += len(job.payload_json)
        for tenant, count in Counter(job.tenant_id for job in submit.jobs).items():
            lim = limits_of(tenant)
            requests.append((
                tenant, count, sizes[tenant], lim.submit_rate, lim.submit_burst, lim.max_queued,
                lim.max_queued_bytes,
            ))
            owners.append(submit)
    if not any(r[3] > 0 or r[5] > 0 or r[6] > 0 for r in requests):
        return batch
    try:
        verdicts = await redis.admit(requests)
    except StoreUnavailable as exc:
        log.warning("admission skipped: %s", exc)
        return batch
    refused: dict[int, BaseException] = {}
    for submit, (tenant, count, size, *_), (verdict, wait_ms) in zip(owners, requests, verdicts, strict=True):
        if verdict != "ok" and id(submit) not in refused:
            refused[id(submit)] = refusal(verdict, tenant, count, limits_of(tenant), wait_ms, size)
            metrics.inc("conveyor_submissions_limited_total", 1, reason=verdict)
    for submit in batch:
        if id(submit) in refused:
            _answer(submit.reply, refused[id(submit)])
    return [submit for submit in batch if id(submit) not in refused]
