"""WebSocket fan-out: many clients over many tenants while jobs produce a steady stream of events.

Usage: python bench/fanout.py [--clients 1000] [--tenants 100] [--events 1000] [--seconds 20]
Opens the clients (spread evenly over the tenants, each subscribed to its tenant's feed), then
submits no-op jobs round-robin over the tenants so that their events (PENDING, RUNNING,
COMPLETED: three a job) come at --events a second. For every JOB_UPDATE a client receives it
takes the event's updatedAt (the time PostgreSQL's transaction wrote it, or the writer's clock
for PENDING) from its arrival: a delay from commit to receipt that errs long by the length of
the transaction. The clients run in processes of their own (one per 250), apart from the node and
from the submitter, on plain sockets (rawws.py: they stand in for clients on other machines, so
they take as little of this one's CPU as they can; trio-websocket clients took most of a core).
Prints p50/p99/max of that delay, and whether every client got every event of its tenant and
none was closed. Needs the local PostgreSQL and Redis; starts its own node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio
from rawws import Closed, Feed, address
from throughput import NODE_PIDS, cpu_seconds, started_node


def _delay_ms(event: dict[str, object], received: float) -> float:
    stamp = datetime.fromisoformat(str(event["updatedAt"]).replace("Z", "+00:00")).timestamp()
    return (received - stamp) * 1000


async def client(url: str, tenant: str, ready: trio.MemorySendChannel[None], out: dict[str, Any]) -> None:
    """One subscriber of `tenant`, reading until its process cancels it; what it saw goes into
    `out` as it comes."""
    delays: list[float] = []
    seen: set[str] = set()
    out.update(tenant=tenant, delays=delays, seen=seen, closed=False)
    try:
        async with await Feed.open(*address(url)) as feed:
            await feed.send({"type": "SUBSCRIBE", "tenantId": tenant})
            while not any(m["type"] == "SUBSCRIBED" for m in await feed.receive()):
                pass
            async with ready:
                await ready.send(None)
            while True:
                messages = await feed.receive()
                received = time.time()
                for message in messages:
                    if message.get("type") == "JOB_UPDATE":
                        delays.append(_delay_ms(message, received))
                        seen.add(f"{message['jobId']} {message['status']}")
                    elif message.get("type") == "PING":
                        await feed.send({"type": "PONG"})
    except Closed:
        out["closed"] = True


async def clients(url: str, tenants: list[str], seconds: float) -> list[dict[str, Any]]:
    """This process's share of the clients: subscribe all, say so on stdout, then read for
    `seconds` after stdin says go."""
    results: list[dict[str, Any]] = [{} for _ in tenants]
    send, recv = trio.open_memory_channel[None](len(tenants))
    async with trio.open_nursery() as nursery:
        for i, tenant in enumerate(tenants):
            nursery.start_soon(client, url, tenant, send.clone(), results[i])
            if i % 50 == 49:
                await trio.sleep(0.05)  # a connection storm is not what this measures
        send.close()
        async for _ in recv:
            pass
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return [{**r, "seen": len(r["seen"])} for r in results]


async def produce(url: str, tenants: list[str], events_per_s: int, seconds: float) -> list[str]:
    """No-op jobs round-robin over the tenants, three events each, at events_per_s."""
    per_tick = max(1, round(events_per_s / 3 / 20))  # jobs every 50 ms
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        next_at, k = trio.current_time(), 0
        deadline = next_at + seconds
        while trio.current_time() < deadline:
            jobs = [{"tenantId": tenants[(k + i) % len(tenants)], "type": "sleep", "payload": {"delayMs": 0}} for i in range(per_tick)]
            k += per_tick
            r = await http.post("/jobs/batch", json={"jobs": jobs})
            r.raise_for_status()
            ids += r.json()["jobIds"]
            next_at += 0.05
            await trio.sleep_until(next_at)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000, help="events a second, all tenants together")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--as-clients", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_clients:
        spec = json.loads(sys.stdin.readline())
        print(json.dumps(trio.run(clients, spec["url"], spec["tenants"], spec["seconds"])), flush=True)
        return
    tenants = [f"fan-{i:03d}" for i in range(args.tenants)]
    mine = [tenants[i % len(tenants)] for i in range(args.clients)]
    # as shipped: a tenant may hold 100 sockets, so 1,000 clients need 10 tenants or more
    with started_node(64, auth=False) as (url, _db):
        procs = []
        for start in range(0, len(mine), 250):
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__)), "--as-clients"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"url": url, "tenants": mine[start:start + 250], "seconds": args.seconds + 3}) + "\n")
            proc.stdin.flush()
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        node = NODE_PIDS[-1]
        cpu0, began = cpu_seconds(node), time.perf_counter()
        ids = trio.run(produce, url, tenants, args.events, args.seconds)
        node_cpu = (cpu_seconds(node) - cpu0) / (time.perf_counter() - began)
        results = [r for proc in procs for r in json.loads(proc.communicate()[0])]
    jobs_of: dict[str, int] = {}
    for k in range(len(ids)):
        jobs_of[tenants[k % len(tenants)]] = jobs_of.get(tenants[k % len(tenants)], 0) + 1
    delays = [d for r in results for d in r["delays"]]
    complete = sum(1 for r in results if r["seen"] >= 3 * jobs_of.get(r["tenant"], 0))
    closed = sum(1 for r in results if r["closed"])
    q = statistics.quantiles(delays, n=100)
    print(f"{args.clients} clients over {args.tenants} tenants, {len(ids)} jobs in {args.seconds:.0f} s "
          f"({3 * len(ids) / args.seconds:,.0f} events/s produced, {len(delays) / args.seconds:,.0f} deliveries/s)")
    print(f"commit → client: p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {max(delays):.1f} ms; node CPU {100 * node_cpu:.0f} % of a core")
    print(f"clients with every event of their tenant: {complete} of {len(results)}; closed by the node: {closed}")


if __name__ == "__main__":
    main()
