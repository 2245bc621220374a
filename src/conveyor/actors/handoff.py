"""Jobs claimed along with their dispatch, for a node whose fetcher is idle.

While the fetcher waits for a wake-up (nothing was ready), the writer takes the free executor
slots before it dispatches what it has just committed, has the same Redis call claim up to that
many ready jobs for this node (RedisStore.enqueue_claiming: fair across tenants, as the
fetcher's claim is), and hands them to the executors as the fetcher would. An idle node so starts
a job submitted to it without a wake-up and a claim of its own: one Redis round trip less
between a submit and its RUNNING. The slots it did not fill go back; a job it claimed but could
not hand over keeps its lease until that expires, and the reaper gives it another attempt.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from ..config import Config
from ..model import Envelope
from ..stores.redis import ClaimAsk
from .pool import ExecutorPool


class LocalClaims:
    def __init__(
        self,
        pool: ExecutorPool,
        jobs: trio.MemorySendChannel[Envelope],
        draining: trio.Event,
        node_id: str,
        config: Config,
    ) -> None:
        self.pool = pool
        self.jobs = jobs  # the executors' channel; it holds as many jobs as there are slots
        self.draining = draining
        self.node_id = node_id
        self.lease_ms = int(config.lease_seconds * 1000)
        self.max_running = config.tenant_max_running

    def reserve(self, most: int) -> ClaimAsk | None:
        """The claim to make along with a dispatch of `most` jobs, its slots taken; None when
        the fetcher is busy (it claims fairly itself), no slot is free or the node drains."""
        if most <= 0 or not self.pool.fetcher_idle or self.draining.is_set():
            return None
        taken = self.pool.take_free_slots(most)
        return ClaimAsk(taken, self.node_id, self.lease_ms, self.max_running) if taken else None

    def deliver(self, ask: ClaimAsk, claimed: Sequence[Envelope]) -> None:
        """Hand the claimed jobs to the executors and give back the slots left over."""
        handed = 0
        for job in claimed:
            self.pool.hold_lease(job.id, job.attempt, job.tenant_id)
            try:
                self.jobs.send_nowait(job)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.pool.forget_lease(job.id, job.attempt)  # it expires; the reaper re-runs it
                continue
            handed += 1
        self.pool.give_slots(ask.n - handed)
