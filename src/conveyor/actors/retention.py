"""The pruner: retention of finished jobs and of expired idempotency keys.

One node at a time prunes (a lock in Redis, as for the reconciler). Each round deletes in
batches of PRUNE_BATCH rows, each its own short transaction through a partial index of finished
rows, with a pause between batches, so that pruning never holds a long lock nor takes more than a
slice of PostgreSQL from the hot path; a backlog (a retention just shortened, a first start on a
big table) is worked off a batch at a time.

Deleted rows leave dead space that only VACUUM makes reusable. Autovacuum normally does it (the
jobs table asks for it after 1 % of its rows changed); where it is off, or starved, the table
would grow with every job although its live rows stay flat. So after deleting, at most once in
30 s, the pruner looks at the table's dead rows and vacuums it itself when autovacuum has left
more than VACUUM_DEAD_SHARE of them (and at least VACUUM_DEAD_MIN).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ..failures import StoreUnavailable
from ..metrics import Metrics
from ..stores import PostgresStore, RedisStore

log = logging.getLogger(__name__)

PRUNE_BATCH = 1000
BATCHES_PER_ROUND = 50  # a round deletes at most this many batches before the next interval
PAUSE_S = 0.02  # between two batches of one round
VACUUM_EVERY_S = 30.0
VACUUM_DEAD_MIN, VACUUM_DEAD_SHARE = 10_000, 0.05


async def run_pruner(
    pg: PostgresStore,
    redis: RedisStore,
    metrics: Metrics,
    *,
    node_id: str,
    retention_s: int,
    retentions: Callable[[], dict[str, int]],
    idempotency_s: float,
    interval: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deletes jobs finished more than their tenant's retention ago (`retention_s`, or the
    tenant's own from `retentions()`; 0 keeps them), and idempotency keys older than
    `idempotency_s`. A finished job is gone at most about `interval` after it is due, unless a
    backlog is being worked off."""
    task_status.started()
    deleted, vacuumed_at = 0, trio.current_time()
    while True:
        await trio.sleep(interval)
        try:
            if not await redis.try_lock("pruner", node_id, int(max(interval, 1.0) * 3000)):
                continue
            if deleted and trio.current_time() - vacuumed_at >= VACUUM_EVERY_S:
                deleted, vacuumed_at = 0, trio.current_time()
                await vacuum_if_left(pg)
            own = retentions()
            kept = {t: s for t, s in own.items() if s > 0}
            for _ in range(BATCHES_PER_ROUND):
                jobs = await pg.prune_jobs(retain_s=retention_s, own=list(own), limit=PRUNE_BATCH) if retention_s > 0 else 0
                jobs += await pg.prune_tenant_jobs(kept, limit=PRUNE_BATCH)
                keys = await pg.purge_idempotency_keys(retain_s=idempotency_s, limit=PRUNE_BATCH)
                if jobs:
                    deleted += jobs
                    metrics.inc("conveyor_jobs_pruned_total", jobs)
                if jobs < PRUNE_BATCH and keys < PRUNE_BATCH:
                    break
                await trio.sleep(PAUSE_S)
        except StoreUnavailable as exc:
            log.warning("pruner: %s", exc)


async def vacuum_if_left(pg: PostgresStore) -> None:
    """VACUUM the jobs table when its dead rows are more than autovacuum should have left."""
    dead, live = await pg.jobs_dead_rows()
    if dead >= max(VACUUM_DEAD_MIN, VACUUM_DEAD_SHARE * live):
        began = trio.current_time()
        await pg.vacuum_jobs()
        log.info("pruner: vacuumed the jobs table (%d dead rows of %d) in %.1f s", dead, dead + live,
                 trio.current_time() - began)
