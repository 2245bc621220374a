"""The fetcher: claims as many jobs as there are free executor slots, fair across tenants.

One claim round per batch of free slots (one script call per shard asked, RedisStore.claim);
when nothing is ready it blocks on the wake-ups that enqueues send (a list with one shard,
PUBLISH with more), so an idle node starts a new job within milliseconds, without polling.
Claimed jobs go to the executors' channel, except those of inline handlers, which it runs itself
as it hands them over (executor.InlineJobs).
"""

from __future__ import annotations

import contextlib
import logging

import trio

from ..failures import StoreUnavailable
from ..model import Envelope
from ..stores.protocols import Dispatch
from .executor import InlineJobs
from .pool import ExecutorPool

log = logging.getLogger(__name__)

WAKE_BLOCK_S = 1


async def run_fetcher(
    redis: Dispatch,
    pool: ExecutorPool,
    jobs: trio.MemorySendChannel[Envelope],
    draining: trio.Event,
    *,
    node_id: str,
    lease_ms: int,
    batch: int,
    max_running: int = 0,
    inline: InlineJobs | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`inline`: runs the claimed jobs whose handler is inline here, as they are handed over."""
    task_status.started()
    async with jobs, inline or contextlib.nullcontext():
        while not draining.is_set():
            taken = await pool.take_slots(batch)
            wanted = taken
            claimed: list[Envelope] = []
            try:
                if draining.is_set():
                    return
                try:
                    claimed = await redis.claim(
                        taken, node=node_id, lease_ms=lease_ms, max_running=max_running
                    )
                except StoreUnavailable as exc:
                    log.warning("claim failed: %s", exc)
                    claimed = []
                for job in claimed:
                    pool.hold_lease(job.id, job.attempt, job.tenant_id)
                got = len(claimed)
                pool.give_slots(taken - got)
                taken = got
                # The channel holds as many jobs as the pool has slots, so these fit: handed
                # over without a trip through the scheduler each (one wait only if they do not).
                claimed.reverse()
                while claimed:
                    if inline is not None and inline.takes(claimed[-1]):
                        taken -= 1
                        await inline.run(claimed.pop())  # it owns the job's slot and lease now
                        continue
                    try:
                        jobs.send_nowait(claimed[-1])
                    except trio.WouldBlock:
                        await jobs.send(claimed[-1])
                    claimed.pop()
                    taken -= 1
            finally:
                # Jobs no executor received: forget their leases (they expire and are
                # reaped) and give their slots back.
                for job in claimed:
                    pool.forget_lease(job.id, job.attempt)
                pool.give_slots(taken)
            if got < wanted:
                # The ready queues ran dry: block on the wake-up key instead of polling. Meanwhile
                # the writer may claim what is submitted here for the free slots (handoff.py).
                pool.fetcher_idle = True
                try:
                    await _idle_wait(redis, draining)
                finally:
                    pool.fetcher_idle = False


async def _idle_wait(redis: Dispatch, draining: trio.Event) -> None:
    if draining.is_set():
        return
    try:
        await redis.wait_wake(WAKE_BLOCK_S)
    except StoreUnavailable as exc:
        log.warning("wake wait failed: %s", exc)
        await trio.sleep(1.0)
