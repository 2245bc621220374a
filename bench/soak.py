"""Soak: 200,000 jobs and 10,000 WebSocket connect/disconnect cycles through one node, then check
that memory, open file descriptors and trio tasks come back to where they were after warm-up.

Usage: python bench/soak.py [--jobs N] [--sockets N] [--concurrency C]
Needs the local PostgreSQL and Redis; makes and drops its own database and key prefix (as
bench/throughput.py). Reads the node's own gauges from GET /metrics.
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


async def submit(client: httpx.AsyncClient, n: int) -> None:
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


async def load(client: httpx.AsyncClient, ws_url: str, jobs: int, sockets: int) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, client, jobs)
        nursery.start_soon(socket_cycles, ws_url, sockets)


def completed(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'").fetchone()[0]


async def settle(client: httpx.AsyncClient, database_url: str, expected: int) -> dict[str, float]:
    while True:
        if await trio.to_thread.run_sync(completed, database_url) >= expected:
            break
        await trio.sleep(0.5)
    await trio.sleep(3)  # sockets closed, batches written: let the node go quiet
    return await gauges(client)


async def soak(url: str, database_url: str, jobs: int, sockets: int) -> None:
    ws_url = url.replace("http://", "ws://") + "/ws"
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        # warm-up, the soak's own shape at a tenth of its size: every code path taken, and the
        # connection pools grown to what this load needs (they keep their connections)
        warm_jobs, warm_sockets = jobs // 10, sockets // 10
        await load(client, ws_url, warm_jobs, warm_sockets)
        base = await settle(client, database_url, warm_jobs)
        started = time.monotonic()
        await load(client, ws_url, jobs, sockets)
        after = await settle(client, database_url, warm_jobs + jobs)
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
    args = parser.parse_args()
    with started_node(args.concurrency, auth=False) as (url, database_url):
        trio.run(soak, url, database_url, args.jobs, args.sockets)


if __name__ == "__main__":
    main()
