"""Redis time per job of the dispatch index's three hot scripts: enqueue.lua, claim.lua and
finish.lua, as Redis itself counts it (INFO commandstats: the usec of EVALSHA, which includes the
commands a script calls).

Usage: python bench/scripts.py [--jobs N] [--runs R] [--callgrind]
For 1 and for 10 tenants: N jobs enqueued 250 per call, claimed 64 per call, finished (completed,
one event each) 64 per call; prints the best of R runs per script, in µs per job. Needs the local
Redis (REDIS_URL) and nothing else running on it: the counters are the server's. Uses its own key
prefix and deletes it.

--callgrind counts instructions instead of time, which on a machine whose speed drifts is the
figure that repeats (to about 0.05 %): the same drive against a redis-server of its own run under
valgrind's callgrind (on a free port, stopped by its PID), once with N jobs (default 2,000 here)
and once with 2N; the difference over N is the instructions a job costs Redis, all three scripts.
Needs valgrind and redis-server on the PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from typing import Any

import redis as redis_lib
import trio
from throughput import wipe_prefix

from conveyor.embedded.servers import free_port
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


async def one_run(n: int, tenants: int, url: str = REDIS_URL) -> dict[str, float]:
    prefix = f"bench-scripts-{uuid.uuid4().hex[:8]}"
    store = RedisStore(url, prefix=prefix, pool_size=2)
    client = redis_lib.Redis.from_url(url)
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


def instructions(n: int, tenants: int) -> int:
    """What one run of n jobs costs a redis-server of its own under callgrind, its start and stop
    included: instructions executed."""
    port = free_port()
    with tempfile.TemporaryDirectory() as out:
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out",
             "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            client = redis_lib.Redis(port=port)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.ping()
                    break
                except redis_lib.ConnectionError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("redis-server under valgrind did not answer") from None
                    time.sleep(0.2)
            client.close()
            trio.run(one_run, n, tenants, f"redis://127.0.0.1:{port}/0")
        finally:
            server.send_signal(signal.SIGINT)  # callgrind writes its counts as the server exits
            server.wait(timeout=120)
        with open(f"{out}/callgrind.out") as counts:
            found = re.search(r"^(?:summary|totals): (\d+)", counts.read(), re.MULTILINE)
    if found is None:
        raise RuntimeError("callgrind wrote no totals")
    return int(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=0, help="default 10,000; 2,000 with --callgrind")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="count Redis's instructions (valgrind)")
    args = parser.parse_args()
    if args.callgrind:
        missing = [name for name in ("valgrind", "redis-server") if shutil.which(name) is None]
        if missing:
            print(f"skipped: {' and '.join(missing)} not on the PATH")
            return
        n = args.jobs or 2_000
        for tenants in (1, 10):
            per_job = (instructions(2 * n, tenants) - instructions(n, tenants)) / n
            print(f"{tenants:>2} tenant(s): {per_job:,.0f} instructions of Redis per job, all three scripts")
        return
    args.jobs = args.jobs or 10_000
    for tenants in (1, 10):
        runs = [trio.run(one_run, args.jobs, tenants) for _ in range(args.runs)]
        best = {name: min(run[name] for run in runs) for name in runs[0]}
        line = ", ".join(f"{name} {us:.1f}" for name, us in best.items())
        print(f"{tenants:>2} tenant(s): {line}; all three {sum(best.values()):.1f} µs of Redis per job")


if __name__ == "__main__":
    main()
