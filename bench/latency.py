"""Pickup latency: submit one job at a time, time it to RUNNING and COMPLETED on the feed.

Usage: python bench/latency.py [--jobs N] [--load RATE] [--job noop|sleep] [--no-pin]
With --load, another tenant submits RATE no-op jobs a second (batches of RATE/20 every 50 ms)
the whole time: pickup under a background load. Without it the node is idle between probes.
Measured as a client sees it, at the wire: from writing POST /jobs to the socket to reading its
201, and to reading the JOB_UPDATE messages on the WebSocket feed (read all along, by a task of
its own). Both are plain sockets (rawws.py), so that an HTTP client's own work is not counted.

The client stands in for one on another machine, so it runs on a CPU of its own and the node's
event loop on the others (--no-pin: wherever the kernel puts them). On a small machine the
kernel otherwise wakes the client on the core of the node that wrote to it (a socket's wake-up
says the writer will sleep soon) and it waits there behind the node's next millisecond of work
while the other core idles: 1.2-1.3 ms from a frame's write to its read when both were on one
core, 0.2 ms otherwise, measured with sched_getcpu on two cores. Needs the local PostgreSQL and
Redis; creates and drops its own database and Redis key prefix, and kills the node it starts by
its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import httpx
import trio
from rawws import Feed, address, read_answer
from throughput import JOBS, NODE_PIDS, started_node


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
    """Per job, ms from writing its POST /jobs to the socket (one write) to reading: the 201, and
    its RUNNING and COMPLETED events on the feed (read all along by a task of its own, so an
    event that comes before the 201 counts when it came)."""
    to_answer, to_running, to_completed = [], [], []
    arrived: dict[tuple[str, str], float] = {}
    done = trio.Event()
    want: list[str] = []  # the job whose COMPLETED ends the wait

    async def listen(feed: Feed) -> None:
        while True:
            for msg in await feed.receive():
                if msg.get("type") == "JOB_UPDATE":
                    arrived.setdefault((msg["jobId"], msg["status"]), feed.read_at)
                    if want and msg["jobId"] == want[-1] and msg["status"] == "COMPLETED":
                        done.set()

    job_type, payload = JOBS[job]
    host, port = address(url)
    body = json.dumps({"tenantId": "latency", "type": job_type, "payload": payload}).encode()
    request = (
        f"POST /jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with await trio.open_tcp_stream(host, port) as http, await Feed.open(host, port) as feed:
        await feed.send({"type": "SUBSCRIBE", "tenantId": "latency"})
        await feed.receive()  # SUBSCRIBED
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen, feed)
            for _ in range(n):
                await trio.sleep(0.05)  # let the node go idle: its fetcher blocks on the wake-up key
                done = trio.Event()
                sent = time.perf_counter()
                await http.send_all(request)
                status, answer = await read_answer(http)
                to_answer.append((time.perf_counter() - sent) * 1000)
                if status != 201:
                    raise RuntimeError(f"POST /jobs answered {status}: {answer!r}")
                job_id = json.loads(answer)["jobId"]
                want.append(job_id)
                if (job_id, "COMPLETED") not in arrived:
                    await done.wait()
                to_running.append((arrived[(job_id, "RUNNING")] - sent) * 1000)
                to_completed.append((arrived[(job_id, "COMPLETED")] - sent) * 1000)
            nursery.cancel_scope.cancel()
    return to_answer, to_running, to_completed


def pin(node_pid: int) -> str:
    """The client (this process) on the last CPU it may use, the node's threads on the others;
    says where. With one CPU, nothing to separate."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "one CPU: client and node share it"
    client, node = {cpus[-1]}, set(cpus[:-1])
    os.sched_setaffinity(0, client)
    for thread in os.listdir(f"/proc/{node_pid}/task"):
        os.sched_setaffinity(int(thread), node)
    return f"client on CPU {cpus[-1]}, node on CPU {','.join(map(str, sorted(node)))}"


def summary(name: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"{name}: p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--load", type=int, default=0, help="another tenant's jobs a second meanwhile")
    parser.add_argument("--job", choices=sorted(JOBS), default="noop", help="the jobs' kind (bench/throughput.py's JOBS)")
    parser.add_argument("--no-pin", action="store_true", help="leave the client's and the node's CPUs to the kernel")
    args = parser.parse_args()
    with started_node(concurrency=8 if not args.load else 64, auth=False) as (url, _database_url):
        placement = "client and node on any CPU" if args.no_pin else pin(NODE_PIDS[-1])
        answered, running, completed = trio.run(measure, url, args.jobs, args.load, args.job)
    print((f"background load: {args.load} jobs/s" if args.load else "idle node") + f", {args.job} jobs, {placement}")
    print(summary("submit → 201 answer     ", answered))
    print(summary("submit → RUNNING event  ", running))
    print(summary("submit → COMPLETED event", completed))


if __name__ == "__main__":
    main()
