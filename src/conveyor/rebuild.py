"""`conveyor redis rebuild`: the dispatch index rebuilt from PostgreSQL, the truth.

It walks every unfinished job (PENDING or RUNNING) and dispatches again each one that Redis does
not know, as the reconciler does (actors.maintenance.repair), but at once and without waiting for
jobs to be quiet. That is safe while nodes run: a job dispatched twice is skipped, and one that
ended meanwhile is left alone. A RUNNING job gets an expired lease, so that the reaper decides, as
for a dead node, between another attempt and FAILED.

With `wipe`, every key under the prefix is deleted first, on every master: the way to change
CONVEYOR_REDIS_SHARDS (tenants move to other shards, and the old layout must not come back) or to
start over after losing a shard. Wiping is for a deployment whose nodes are all stopped.
"""

from __future__ import annotations

from typing import Any

from .actors.maintenance import RECONCILE_PAGE, SCAN_START, repair
from .config import Config
from .stores import PostgresStore
from .stores.redis import open_redis


async def rebuild(config: Config, *, wipe: bool) -> dict[str, Any]:
    """Rebuild; returns what was done, for the command to print."""
    pg = PostgresStore(config.database_url, pool_size=2, timeout=10)
    await pg.open()
    try:
        redis = await open_redis(
            config.redis_url, setting=config.redis_cluster, wait=False, shards=config.redis_shards,
            prefix=config.redis_prefix, pool_size=4, feed_events=config.feed_retention_events,
            feed_seconds=config.feed_retention_seconds,
        )
        try:
            deleted = await redis.wipe() if wipe else 0
            cursor, unfinished, dispatched = SCAN_START, 0, 0
            while True:
                rows = await pg.unfinished_jobs(quiet_s=0, after=cursor, limit=RECONCILE_PAGE)
                unfinished += len(rows)
                dispatched += await repair(pg, redis, rows)
                if len(rows) < RECONCILE_PAGE:
                    break
                cursor = (rows[-1]["updated_at"], rows[-1]["id"])
            return {
                "cluster": redis.cluster, "shards": redis.shards.count, "keysDeleted": deleted,
                "unfinished": unfinished, "dispatched": dispatched,
            }
        finally:
            await redis.close()
    finally:
        await pg.close()
