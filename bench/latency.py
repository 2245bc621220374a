"""Pickup latency on an idle node: submit one job at a time, time it to RUNNING and COMPLETED.

Usage: python bench/latency.py [--jobs N]
Measured end to end as a client sees it: from sending POST /jobs to receiving the JOB_UPDATE
messages on the WebSocket feed. Needs the local PostgreSQL and Redis; creates and drops its own
database and Redis key prefix, and kills the node it starts by its PID.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx
import trio
from throughput import started_node
from trio_websocket import open_websocket_url


async def measure(url: str, n: int) -> tuple[list[float], list[float]]:
    to_running, to_completed = [], []
    async with httpx.AsyncClient(base_url=url) as client, open_websocket_url(
        url.replace("http://", "ws://") + "/ws"
    ) as ws:
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": "latency"}))
        await ws.get_message()
        for _ in range(n):
            await trio.sleep(0.05)  # let the node go idle: its fetcher blocks on the wake-up key
            sent = time.perf_counter()
            r = await client.post("/jobs", json={"tenantId": "latency", "type": "sleep", "payload": {"delayMs": 0}})
            job_id = r.json()["jobId"]
            while True:
                msg = json.loads(await ws.get_message())
                if msg.get("jobId") != job_id:
                    continue
                elapsed = (time.perf_counter() - sent) * 1000
                if msg["status"] == "RUNNING":
                    to_running.append(elapsed)
                elif msg["status"] == "COMPLETED":
                    to_completed.append(elapsed)
                    break
    return to_running, to_completed


def summary(name: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"{name}: p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with started_node(concurrency=8, auth=False) as (url, _database_url):
        running, completed = trio.run(measure, url, args.jobs)
    print(summary("submit → RUNNING event  ", running))
    print(summary("submit → COMPLETED event", completed))


if __name__ == "__main__":
    main()
