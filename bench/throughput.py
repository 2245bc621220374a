"""Enqueue-then-drain throughput of no-op jobs: conveyor side by side with BullMQ, arq and SAQ.

Usage: python bench/throughput.py [--jobs N] [--concurrency C] [--peers bullmq,arq,saq] [--auth] [--rounds R]
Every queue runs R times (default 3), in turns (conveyor, then each peer, then conveyor again, …),
and the medians are compared; each round's rates are printed too. By default the node runs as the
peers do, without auth or submit limits; --auth measures it as deployed: an API key on every
request and the admission check (rate, quota) on every batch.
Needs the local PostgreSQL and Redis (DATABASE_URL's server, REDIS_URL). Creates and drops its own
database and Redis key prefix; kills the node it starts by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from statistics import median

import httpx
import psycopg
import redis

from conveyor.stores.redis_conn import is_cluster

NODE_PIDS: list[int] = []  # of the nodes started_node runs, for benchmarks that read /proc
ADMIN_URL = os.environ.get("CONVEYOR_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def started_node(concurrency: int, auth: bool, **settings: str) -> Iterator[tuple[str, str]]:
    """A `conveyor serve` process on a fresh database and key prefix; yields (url, database url).
    `settings` are more environment variables for it (CONVEYOR_…)."""
    name = f"conveyor_bench_{secrets.token_hex(4)}"
    base = ADMIN_URL.rpartition("/")[0]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    prefix = f"bench-{secrets.token_hex(4)}"
    log = tempfile.NamedTemporaryFile(prefix="conveyor-bench-", suffix=".log", delete=False)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL,
        "CONVEYOR_REDIS_PREFIX": prefix,
        "CONVEYOR_CONCURRENCY": str(concurrency),
        "CONVEYOR_LOG_LEVEL": "WARNING",
    }
    if auth:  # admission runs on every batch, but a limit this high never refuses
        env |= {"CONVEYOR_TENANT_SUBMIT_RATE": "1000000000", "CONVEYOR_TENANT_SUBMIT_BURST": "1000000000"}
    else:  # peers have no auth or submit limits either: measure the queue, not the limiter
        env |= {"CONVEYOR_AUTH": "off", "CONVEYOR_TENANT_SUBMIT_RATE": "0"}
    env |= settings
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", "--port", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    NODE_PIDS.append(proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            found = re.search(r"Running on (http://\S+)", open(log.name).read())
            if found:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(open(log.name).read())
            time.sleep(0.05)
        yield found[1], url
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = (redis.RedisCluster if is_cluster(REDIS_URL) else redis.Redis).from_url(REDIS_URL)
        wipe_prefix(client, prefix)
        client.close()
        os.unlink(log.name)


def wipe_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete a benchmark's keys (one at a time: on a cluster they are on every master)."""
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


def bench_key(database_url: str, tenant: str = "bench") -> str:
    """A tenant and a key of it, made with the CLI."""
    env = {**os.environ, "DATABASE_URL": database_url, "CONVEYOR_LOG_LEVEL": "WARNING"}
    for args in (["tenants", "create", tenant], ["keys", "create", "--tenant", tenant]):
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, check=True
        )
    return json.loads(done.stdout)["key"]


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def _cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each of these processes that still runs."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = cpu_seconds(pid)
    return out


def local_server_pids() -> dict[str, list[int]]:
    """The local Redis's process (INFO's process_id, when it runs on this machine) and every
    PostgreSQL process here (the postmaster, its backends and workers, whichever database)."""
    out: dict[str, list[int]] = {
        "PostgreSQL": [int(p) for p in os.listdir("/proc") if p.isdigit() and _comm(int(p)) == "postgres"],
        "Redis": [],
    }
    if not is_cluster(REDIS_URL):
        client = redis.Redis.from_url(REDIS_URL)
        pid = int(client.info("server")["process_id"])
        client.close()
        if _comm(pid).startswith(("redis", "valkey")):
            out["Redis"] = [pid]
    return out


@dataclasses.dataclass
class Measured:
    rate: float  # jobs/s
    cpu_us: dict[str, float]  # process -> CPU µs per job over the measured run (node first)


def conveyor_rate(n: int, concurrency: int, auth: bool, job: str = "noop") -> Measured:
    """The rate after a warm-up of a tenth of n, and the CPU per job of the node, of Redis and of
    PostgreSQL (all its processes; a backend that starts during the run counts whole) where /proc
    shows them."""
    with started_node(concurrency, auth) as (node_url, url):
        headers = {"Authorization": f"Bearer {bench_key(url)}"} if auth else {}
        drive(node_url, url, max(1000, n // 10), headers, job=job)  # connections, scripts, caches
        pids = {"node": [NODE_PIDS[-1]], **local_server_pids()}
        before = {name: _cpu_of(group) for name, group in pids.items()}
        rate = drive(node_url, url, n, headers, job=job)
        pids["PostgreSQL"] = sorted(set(pids["PostgreSQL"]) | set(local_server_pids()["PostgreSQL"]))
        cpu_us = {}
        for name, group in pids.items():
            after = _cpu_of(group)
            if after:
                used = sum(cpu - before[name].get(pid, 0.0) for pid, cpu in after.items())
                cpu_us[name] = used / n * 1e6
        return Measured(rate, cpu_us)


# the no-op job each queue runs: conveyor's built-in `noop` (inline, no result), or `sleep` with
# delayMs 0 (an async handler that yields once and returns {"sleptMs": 0}, stored as its result)
JOBS = {"noop": ("noop", {}), "sleep": ("sleep", {"delayMs": 0})}


def drive(
    node_url: str, url: str, n: int, headers: dict[str, str] | None = None, tenants: int = 0, job: str = "noop"
) -> float:
    """Submit n no-op jobs to a node (1,000 per batch, 4 batches in flight) and wait for them:
    jobs/s from the first submit to the last COMPLETED row (of the jobs created since). The jobs
    are tenant "bench"'s, or spread over `tenants` tenants bench-0, bench-1, …; `job` names one
    of JOBS."""
    job_type, payload = JOBS[job]
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT now()").fetchone()[0]

    def tenant(k: int) -> str:
        return f"bench-{k % tenants}" if tenants else "bench"

    async def submit() -> float:
        async with httpx.AsyncClient(base_url=node_url, timeout=60, headers=headers or {}) as client:
            started = time.time()
            sem = asyncio.Semaphore(4)

            async def one(first: int, size: int) -> None:
                body = [{"tenantId": tenant(first + k), "type": job_type, "payload": payload} for k in range(size)]
                async with sem:
                    r = await client.post("/jobs/batch", json={"jobs": body})
                    r.raise_for_status()

            await asyncio.gather(*(one(i, min(1000, n - i)) for i in range(0, n, 1000)))
            return started

    started = asyncio.run(submit())
    with psycopg.connect(url) as conn:
        while True:
            done, last = conn.execute(
                "SELECT count(*), max(updated_at) FROM jobs WHERE status = 'COMPLETED' AND created_at >= %s",
                (before,),
            ).fetchone()
            if done >= n:
                break
            # the rate ends at the last row's updated_at, not at this poll: poll seldom, since
            # each count scans the new rows on the same two cores as the node
            time.sleep(0.25)
    return n / (last.timestamp() - started)


async def noop(ctx: dict) -> None:
    return None


def arq_rate(n: int, concurrency: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker

    settings = RedisSettings.from_dsn(REDIS_URL)
    queue = f"arq:bench:{secrets.token_hex(4)}"

    async def run() -> float:
        pool = await create_pool(settings, default_queue_name=queue)
        started = time.time()
        for _ in range(n):
            await pool.enqueue_job("noop")
        worker = Worker(
            functions=[noop], redis_settings=settings, burst=True, max_jobs=concurrency,
            queue_name=queue, keep_result=0, handle_signals=False, poll_delay=0.01,
        )
        await worker.main()
        finished = time.time()
        assert worker.jobs_complete == n, (worker.jobs_complete, n)
        await worker.close()
        await pool.delete(queue)
        await pool.aclose()
        return n / (finished - started)

    return asyncio.run(run())


def saq_rate(n: int, concurrency: int) -> float:
    from saq import Queue, Worker

    async def run() -> float:
        queue = Queue.from_url(REDIS_URL, name=f"bench-saq-{secrets.token_hex(4)}")
        await queue.connect()
        try:
            started = time.time()
            for _ in range(n):
                await queue.enqueue("noop")
            # burst mode stops once a dequeue has waited dequeue_timeout for nothing
            idle = 0.05
            worker = Worker(
                queue, functions=[noop], concurrency=concurrency, burst=True, dequeue_timeout=idle
            )
            await worker.start()
            finished = time.time() - idle
            assert await queue.count("incomplete") == 0
            return n / (finished - started)
        finally:
            keys = [k async for k in queue.redis.scan_iter(match=f"saq:*{queue.name}*", count=1000)]
            for i in range(0, len(keys), 1000):
                await queue.redis.delete(*keys[i : i + 1000])
            await queue.disconnect()

    return asyncio.run(run())


BULLMQ_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bullmq")


def bullmq_rate(n: int, concurrency: int) -> float | str:
    """BullMQ (Node.js, Redis only): addBulk of 1,000 at a time, then one Worker at this
    concurrency, completed jobs removed as they finish (its fastest setting). Installs bullmq
    with npm into bench/bullmq on first use; a reason instead of a rate when it cannot run."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "skipped: node and npm are not installed"
    if not os.path.isdir(os.path.join(BULLMQ_DIR, "node_modules", "bullmq")):
        installed = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=BULLMQ_DIR, capture_output=True, text=True
        )
        if installed.returncode != 0:
            return f"skipped: npm install failed: {installed.stderr.strip().splitlines()[-1:]}"
    done = subprocess.run(
        ["node", "throughput.mjs", REDIS_URL, str(n), str(concurrency), "remove"],
        cwd=BULLMQ_DIR, capture_output=True, text=True,
    )
    if done.returncode != 0:
        return f"failed: {(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1]}"
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--peers", default="bullmq,arq,saq", help="comma-separated: bullmq, arq, saq (or none)")
    parser.add_argument("--auth", action="store_true", help="API keys and admission checks on")
    parser.add_argument("--job", choices=sorted(JOBS), default="noop", help="conveyor's no-op job (default noop)")
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of every queue in turn (default 3); the medians are compared",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    mode = "auth and limits on" if args.auth else "auth off, no limits"
    peers: dict[str, Callable[[int, int], float | str]] = {"bullmq": bullmq_rate, "arq": arq_rate, "saq": saq_rate}
    names = [p for p in args.peers.split(",") if p in peers]
    ours: list[Measured] = []
    theirs: dict[str, list[float]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    # the queues take turns, round after round: on a machine whose speed drifts by a third within
    # minutes, each queue's median then comes from the same stretch of time as the others'
    for round_ in range(1, args.rounds + 1):
        measured = conveyor_rate(args.jobs, args.concurrency, args.auth, args.job)
        ours.append(measured)
        line = [f"conveyor {measured.rate:,.0f} (node {measured.cpu_us['node']:.0f} µs/job)"]
        for name in names:
            if name in skipped:
                continue
            rate = peers[name](args.jobs, args.concurrency)
            if isinstance(rate, str):
                skipped[name] = rate
                continue
            theirs[name].append(rate)
            line.append(f"{name} {rate:,.0f}" + (f" ({measured.rate / rate:.2f})" if name == "bullmq" else ""))
        if args.rounds > 1:
            print(f"round {round_}: " + ", ".join(line) + " jobs/s", flush=True)
    rate = median([m.rate for m in ours])
    cpu = {name: median([m.cpu_us[name] for m in ours if name in m.cpu_us]) for name in ours[0].cpu_us}
    others = ", ".join(f"{name} {us:.0f}" for name, us in cpu.items() if name != "node")
    of = f"median of {args.rounds} rounds" if args.rounds > 1 else "one round"
    print(f"conveyor ({mode}, {args.job} jobs): {args.jobs} jobs, {rate:,.0f} jobs/s (first submit to last COMPLETED"
          f" row; {of}), node CPU {cpu['node']:.0f} µs/job" + (f" ({others} µs/job)" if others else ""))
    for name in names:
        if name in skipped:
            print(f"{name}: {skipped[name]}")
            continue
        print(f"{name}: {args.jobs} jobs, {median(theirs[name]):,.0f} jobs/s (first enqueue to end of drain; {of})")
        print(f"ratio conveyor/{name}: {rate / median(theirs[name]):.2f}")


if __name__ == "__main__":
    main()
