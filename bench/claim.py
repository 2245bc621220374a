"""Claim cost by queue length: one tenant with 1,000, 10,000 and 100,000 ready jobs at mixed
priorities; times RedisStore.claim of a batch of 32 (and then finishes them, as nodes do) at
each depth. A claim pops the most urgent job with ZPOPMIN, so its cost grows as log n: the
times at 100,000 should be those at 1,000 plus noise.

Usage: python bench/claim.py [--claims N]
Needs the local Redis; uses its own key prefix and deletes it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid

import trio
from throughput import wipe_prefix

from conveyor.model import NewJob
from conveyor.stores.redis import Applied, RedisStore
from conveyor.wire import created_events

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def fill(redis: RedisStore, tenant: str, n: int) -> None:
    for start in range(0, n, 1000):
        jobs = [
            NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, 3, 1000, priority=random.randint(0, 9))
            for _ in range(min(1000, n - start))
        ]
        await redis.enqueue(jobs, created_events(jobs))


async def timed_claims(redis: RedisStore, claims: int) -> list[float]:
    times = []
    for _ in range(claims):
        began = time.perf_counter()
        got = await redis.claim(32, node="bench", lease_ms=60_000)
        times.append((time.perf_counter() - began) * 1e6)
        await redis.finish([Applied(j.tenant_id, j.id, j.attempt, "done") for j in got])
        # put as many back, so that the depth stays what it is being measured at
        await fill(redis, "bench", len(got))
    return times


async def run(claims: int) -> None:
    prefix = f"bench-claim-{uuid.uuid4().hex[:8]}"
    redis = RedisStore(REDIS_URL, prefix=prefix, pool_size=2)
    try:
        depth = 0
        for target in (1_000, 10_000, 100_000):
            await fill(redis, "bench", target - depth)
            depth = target
            times = await timed_claims(redis, claims)
            q = statistics.quantiles(times, n=100)
            print(f"{target:>7,} ready: claim of 32 p50 {q[49]:.0f} µs, p99 {q[98]:.0f} µs (n={claims})")
    finally:
        await trio.to_thread.run_sync(wipe_prefix, redis.client, prefix)
        await redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=300)
    trio.run(run, parser.parse_args().claims)


if __name__ == "__main__":
    main()
