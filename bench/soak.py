"""Soak: 200,000 jobs and 10,000 WebSocket connect/disconnect cycles through one node, then check
that memory, open file descriptors and trio tasks come back to where they were after warm-up.

Usage: python bench/soak.py [--jobs N] [--sockets N] [--concurrency C] [--retention S] [--rate R]
Needs the local PostgreSQL and Redis; makes and drops its own database and key prefix (as
bench/throughput.py). Reads the node's own gauges from GET /metrics. With --retention S the node
deletes finished jobs S seconds after they finished (CONVEYOR_RETENTION_SECONDS), and the soak
prints the jobs table's rows and size (pg_total_relation_size) every 10 s: with --rate below the
node's throughput, they level off.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import psycopg
import trio
from throughput import started_node
from trio_websocket import open_websocket_url

GAUGES = (
    "process_resident_memory_bytes", "process_open_fds", "conveyor_trio_tasks",
    "conveyor_pg_connections", "conveyor_redis_connections",
)
# descriptors other than the store pools' connections, which grow under load up to their sizes
OTHER_FDS = "fds besides store connections"


async def gauges(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    values = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    out = {name: float(values[name]) for name in GAUGES}
    out[OTHER_FDS] = (
        out["process_open_fds"] - out["conveyor_pg_connections"] - out["conveyor_redis_connections"]
    )
    return out


async def submit(client: httpx.AsyncClient, n: int, rate: float = 0) -> None:
    """n jobs in batches of 1,000, 4 in flight; at most `rate` jobs/s when given."""
    body = {"jobs": [{"tenantId": "soak", "type": "sleep", "payload": {"delayMs": 0}}] * 1000}
    limiter = trio.Semaphore(4)

    async def one(size: int) -> None:
        async with limiter:
            while True:
                r = await client.post("/jobs/batch", json={"jobs": body["jobs"][:size]})
                if r.status_code != 429:  # over the tenant's queue quota: wait as told
                    break
                await trio.sleep(float(r.headers.get("Retry-After", "1")))
            r.raise_for_status()

    async with trio.open_nursery() as nursery:
        for start in range(0, n, 1000):
            nursery.start_soon(one, min(1000, n - start))
            if rate:
                await trio.sleep(1000 / rate)


async def socket_cycles(ws_url: str, n: int) -> None:
    limiter = trio.Semaphore(20)

    async def cycle() -> None:
        async with limiter, open_websocket_url(ws_url) as ws:
            json.loads(await ws.get_message())  # CONNECTED
            await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": "soak"}))
            while json.loads(await ws.get_message())["type"] != "SUBSCRIBED":
                pass

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(cycle)


async def load(client: httpx.AsyncClient, ws_url: str, jobs: int, sockets: int, rate: float = 0) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, client, jobs, rate)
        nursery.start_soon(socket_cycles, ws_url, sockets)


async def completed(client: httpx.AsyncClient) -> int:
    """Jobs the node finished COMPLETED (its counter: retention may have deleted their rows)."""
    text = (await client.get("/metrics")).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("conveyor_jobs_finished_total{") and 'outcome="completed"' in line)


def table(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        rows, size = conn.execute("SELECT count(*), pg_total_relation_size('jobs') FROM jobs").fetchone()
    return int(rows), int(size)


async def sample_table(database_url: str, began: float) -> None:
    while True:
        await trio.sleep(10)
        rows, size = await trio.to_thread.run_sync(table, database_url)
        print(f"  at {time.monotonic() - began:4.0f} s: jobs table {rows:,} rows, {size / 2**20:,.1f} MiB", flush=True)


async def settle(client: httpx.AsyncClient, database_url: str, expected: int) -> dict[str, float]:
    while True:
        if await completed(client) >= expected:
            break
        await trio.sleep(0.5)
    await trio.sleep(3)  # sockets closed, batches written: let the node go quiet
    return await gauges(client)


async def soak(url: str, database_url: str, jobs: int, sockets: int, sizes: bool, rate: float) -> None:
    ws_url = url.replace("http://", "ws://") + "/ws"
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        # warm-up, the soak's own shape at a tenth of its size: every code path taken, and the
        # connection pools grown to what this load needs (they keep their connections)
        warm_jobs, warm_sockets = jobs // 10, sockets // 10
        await load(client, ws_url, warm_jobs, warm_sockets)
        base = await settle(client, database_url, warm_jobs)
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            if sizes:
                nursery.start_soon(sample_table, database_url, started)
            await load(client, ws_url, jobs, sockets, rate)
            after = await settle(client, database_url, warm_jobs + jobs)
            nursery.cancel_scope.cancel()
        took = time.monotonic() - started
    print(f"soak: {jobs:,} jobs and {sockets:,} WebSocket cycles in {took:.0f} s")
    for name in (*GAUGES, OTHER_FDS):
        growth = (after[name] - base[name]) / base[name] * 100
        print(f"  {name}: after warm-up {base[name]:,.0f}, after soak {after[name]:,.0f} ({growth:+.1f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--retention", type=int, default=None, help="CONVEYOR_RETENTION_SECONDS for the node")
    parser.add_argument("--rate", type=float, default=0, help="submit at most this many jobs/s (default: as fast as taken)")
    args = parser.parse_args()
    settings = {} if args.retention is None else {"CONVEYOR_RETENTION_SECONDS": str(args.retention)}
    with started_node(args.concurrency, auth=False, **settings) as (url, database_url):
        trio.run(soak, url, database_url, args.jobs, args.sockets, args.retention is not None, args.rate)
        if args.retention is not None:
            rows, size = table(database_url)
            print(f"  at the end: jobs table {rows:,} rows, {size / 2**20:,.1f} MiB")


if __name__ == "__main__":
    main()
