"""Pickup latency: submit one job at a time, time it to RUNNING and COMPLETED on the feed.

Usage: python bench/latency.py [--jobs N] [--load RATE] [--job noop|sleep]
With --load, another tenant submits RATE no-op jobs a second (batches of RATE/20 every 50 ms)
the whole time: pickup under a background load. Without it the node is idle between probes.
Measured end to end as a client sees it: from sending POST /jobs to receiving its 201, and to
the JOB_UPDATE messages arriving on the WebSocket feed (read all along, by a task of its own). Needs the local PostgreSQL and Redis; creates and drops its own
database and Redis key prefix, and kills the node it starts by its PID.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx
import trio
from throughput import JOBS, started_node
from trio_websocket import WebSocketConnection, open_websocket_url


async def background(url: str, rate: int, job: str) -> None:
    """Another tenant's jobs, `rate` a second, until cancelled."""
    size = max(1, rate // 20)
    job_type, payload = JOBS[job]
    body = {"jobs": [{"tenantId": "load", "type": job_type, "payload": payload}] * size}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        next_at = trio.current_time()
        while True:
            (await client.post("/jobs/batch", json=body)).raise_for_status()
            next_at += 0.05
            await trio.sleep_until(next_at)


async def measure(url: str, n: int, load: int = 0, job: str = "noop") -> tuple[list[float], list[float], list[float]]:
    async with trio.open_nursery() as nursery:
        if load:
            nursery.start_soon(background, url, load, job)
            await trio.sleep(2)  # let the load settle
        found = await probe(url, n, job)
        nursery.cancel_scope.cancel()
    return found


async def probe(url: str, n: int, job: str = "noop") -> tuple[list[float], list[float], list[float]]:
    """Per job, ms from sending its POST /jobs to: the 201, and its RUNNING and COMPLETED events
    arriving on the feed (read all along by a task of its own, so an event that comes before the
    201 counts when it came)."""
    to_answer, to_running, to_completed = [], [], []
    arrived: dict[tuple[str, str], float] = {}
    done = trio.Event()
    want: list[str] = []  # the job whose COMPLETED ends the wait

    async def listen(ws: WebSocketConnection) -> None:
        while True:
            msg = json.loads(await ws.get_message())
            at = time.perf_counter()
            if msg.get("type") == "JOB_UPDATE":
                arrived.setdefault((msg["jobId"], msg["status"]), at)
                if want and msg["jobId"] == want[-1] and msg["status"] == "COMPLETED":
                    done.set()

    job_type, payload = JOBS[job]
    async with httpx.AsyncClient(base_url=url) as client, open_websocket_url(
        url.replace("http://", "ws://") + "/ws"
    ) as ws, trio.open_nursery() as nursery:
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": "latency"}))
        await ws.get_message()
        nursery.start_soon(listen, ws)
        for _ in range(n):
            await trio.sleep(0.05)  # let the node go idle: its fetcher blocks on the wake-up key
            done = trio.Event()
            sent = time.perf_counter()
            r = await client.post("/jobs", json={"tenantId": "latency", "type": job_type, "payload": payload})
            to_answer.append((time.perf_counter() - sent) * 1000)
            job_id = r.json()["jobId"]
            want.append(job_id)
            if (job_id, "COMPLETED") not in arrived:
                await done.wait()
            to_running.append((arrived[(job_id, "RUNNING")] - sent) * 1000)
            to_completed.append((arrived[(job_id, "COMPLETED")] - sent) * 1000)
        nursery.cancel_scope.cancel()
    return to_answer, to_running, to_completed


def summary(name: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"{name}: p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--load", type=int, default=0, help="another tenant's jobs a second meanwhile")
    parser.add_argument("--job", choices=sorted(JOBS), default="noop", help="the jobs' kind (bench/throughput.py's JOBS)")
    args = parser.parse_args()
    with started_node(concurrency=8 if not args.load else 64, auth=False) as (url, _database_url):
        answered, running, completed = trio.run(measure, url, args.jobs, args.load, args.job)
    print((f"background load: {args.load} jobs/s" if args.load else "idle node") + f", {args.job} jobs")
    print(summary("submit → 201 answer     ", answered))
    print(summary("submit → RUNNING event  ", running))
    print(summary("submit → COMPLETED event", completed))


if __name__ == "__main__":
    main()
