"""Redis time per job of the dispatch index's three hot scripts: enqueue.lua, claim.lua and
finish.lua, as Redis itself counts it (INFO commandstats: the usec of EVALSHA, which includes the
commands a script calls).

Usage: python bench/scripts.py [--jobs N] [--runs R]
For 1 and for 10 tenants: N jobs enqueued 250 per call, claimed 64 per call, finished (completed,
one event each) 64 per call; prints the best of R runs per script, in µs per job. Needs the local
Redis (REDIS_URL) and nothing else running on it: the counters are the server's. Uses its own key
prefix and deletes it.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from typing import Any

import redis as redis_lib
import trio
from throughput import wipe_prefix

from conveyor.model import NewJob
from conveyor.stores.redis import Applied, RedisStore
from conveyor.wire import created_events

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
EVENT = json.dumps({
    "type": "JOB_UPDATE", "jobId": "x", "tenantId": "t", "status": "COMPLETED", "error": None,
    "attempts": 1, "maxAttempts": 3, "updatedAt": "2026-12-06T00:00:00.000Z",
})


def script_usec(client: Any) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


async def one_run(n: int, tenants: int) -> dict[str, float]:
    prefix = f"bench-scripts-{uuid.uuid4().hex[:8]}"
    store = RedisStore(REDIS_URL, prefix=prefix, pool_size=2)
    client = redis_lib.Redis.from_url(REDIS_URL)
    per_job: dict[str, float] = {}
    try:
        jobs = [NewJob(str(uuid.uuid4()), f"t{i % tenants}", "sleep", {"delayMs": 0}, 3, 1000) for i in range(n)]
        mark = script_usec(client)

        def took(name: str) -> None:
            nonlocal mark
            now = script_usec(client)
            per_job[name], mark = (now - mark) / n, now

        for start in range(0, n, 250):
            part = jobs[start : start + 250]
            await store.enqueue(part, created_events(part))
        took("enqueue")
        claimed = []
        while len(claimed) < n:
            claimed += await store.claim(64, node="bench", lease_ms=60_000)
        took("claim")
        for start in range(0, n, 64):
            part = claimed[start : start + 64]
            await store.finish([Applied(j.tenant_id, j.id, j.attempt, "completed", 0, (EVENT,)) for j in part])
        took("finish")
    finally:
        wipe_prefix(client, prefix)
        client.close()
        await store.close()
    return per_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for tenants in (1, 10):
        runs = [trio.run(one_run, args.jobs, tenants) for _ in range(args.runs)]
        best = {name: min(run[name] for run in runs) for name in runs[0]}
        line = ", ".join(f"{name} {us:.1f}" for name, us in best.items())
        print(f"{tenants:>2} tenant(s): {line}; all three {sum(best.values()):.1f} µs of Redis per job")


if __name__ == "__main__":
    main()
