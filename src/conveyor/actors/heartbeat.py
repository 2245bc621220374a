"""The heartbeat: extends the leases this node holds, in one script call per shard and beat.
A shard whose master is down is left for the next beat; it does not hold back the others.

A lease found lost (reaped, or claimed again by another node) cancels that attempt here: its
outcome would be fenced out anyway, so the slot is better spent. A job whose cancellation was
requested is cancelled here too, in case the broadcaster missed the cancel on the stream.
"""

from __future__ import annotations

import logging

import trio

from ..stores import RedisStore, StoreUnavailable
from .pool import CancelReason, ExecutorPool

log = logging.getLogger(__name__)


async def run_heartbeat(
    redis: RedisStore,
    pool: ExecutorPool,
    *,
    node_id: str,
    lease_ms: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    interval = lease_ms / 1000 / 3
    while True:
        await trio.sleep(interval)
        held = pool.held()
        if not held:
            continue
        try:
            stop = await redis.heartbeat(held, node=node_id, lease_ms=lease_ms, within=interval)
        except StoreUnavailable as exc:
            log.warning("heartbeat failed: %s", exc)
            continue
        attempts = {job_id: attempt for job_id, attempt, _ in held}
        for job_id, why in stop:
            if why == "cancel":
                pool.cancel(job_id, attempts[job_id], CancelReason.CANCEL)
            else:
                # (one that finished just now has no lease left either: nothing to stop)
                if pool.cancel(job_id, attempts[job_id], CancelReason.LOST):
                    log.warning("lease of job %s attempt %d lost", job_id, attempts[job_id])
