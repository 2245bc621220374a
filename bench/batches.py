"""One tenant's large batches against another tenant's submits (issue 11's isolation, for writes).

Usage: python bench/batches.py [--seconds S] [--rounds R] [--batch N] [--senders K]
A node with auth on and its default submit limits. Idle phases alternate with loaded ones (R
rounds of S seconds each); in a loaded phase, K senders of tenant A post `POST /jobs/batch` of N
no-op jobs back to back (honouring 429 Retry-After, as a client library does) from a process of
their own, while a probe measures GET /health and tenant B's POST /jobs, one request at a time
(bench/reads.py's probe). Prints p50/p99 of each phase and the ratio loaded/idle. Needs the local
PostgreSQL and Redis; creates and drops its own database and Redis key prefix, and kills the node
it starts by its PID.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

import httpx
import trio
from reads import beside, probe, quantiles
from throughput import bench_key, started_node


async def sender(url: str, a: dict[str, str], size: int, stop: trio.Event, seen: Counter[str]) -> None:
    rng = random.Random()
    body = {"jobs": [{"type": "sleep", "payload": {"delayMs": 0}}] * size}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=a) as client:
        while not stop.is_set():
            r = await client.post("/jobs/batch", json=body)
            seen[str(r.status_code)] += 1
            if r.status_code == 201:
                seen["jobs"] += size
            elif r.status_code == 429:
                await trio.sleep(float(r.headers.get("Retry-After", "1")) * rng.uniform(1, 2))


async def senders(url: str, a: dict[str, str], n: int, size: int, seconds: float) -> Counter[str]:
    stop = trio.Event()
    seen: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(sender, url, a, size, stop, seen)
        await trio.sleep(seconds)
        stop.set()
    return seen


async def loaded_phase(
    client: httpx.AsyncClient, b: dict[str, str], args: argparse.Namespace, url: str, a: dict[str, str]
) -> tuple[tuple[list[float], list[float]], Counter[str]]:
    """A's senders post batches while the probe runs (reads.beside)."""
    spec = {"url": url, "a": a, "n": args.senders, "size": args.batch, "seconds": args.seconds + 2}
    measured, seen, _ = await beside(client, b, args.seconds, str(Path(__file__)), "--as-senders", spec)
    return measured, seen


async def run(url: str, a: dict[str, str], b: dict[str, str], args: argparse.Namespace) -> None:
    idle: tuple[list[float], list[float]] = ([], [])
    loaded: tuple[list[float], list[float]] = ([], [])
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(args.rounds):  # alternated, so that a drift in the machine's speed falls on both
            for into, values in zip(idle, await probe(client, b, args.seconds), strict=True):
                into += values
            phase, used = await loaded_phase(client, b, args, url, a)
            for into, values in zip(loaded, phase, strict=True):
                into += values
            seen += used
            await trio.sleep(2)  # let A's jobs drain before the next idle phase
    for name, i in (("GET /health     ", 0), ("B's POST /jobs  ", 1)):
        (p50_idle, p99_idle), (p50_load, p99_load) = quantiles(idle[i]), quantiles(loaded[i])
        print(f"{name} idle p50 {p50_idle:6.1f} ms p99 {p99_idle:6.1f} ms | "
              f"with A's batches p50 {p50_load:6.1f} ms p99 {p99_load:6.1f} ms | p99 ratio {p99_load / p99_idle:4.2f}")
    elapsed = args.rounds * (args.seconds + 2)
    print(f"A's batches of {args.batch}: {seen['201']} accepted ({seen['jobs'] / elapsed:,.0f} jobs/s), "
          f"{seen['429']} refused 429, {sum(n for k, n in seen.items() if k not in ('201', '429', 'jobs'))} other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="idle and loaded phases, alternated")
    parser.add_argument("--batch", type=int, default=1000, help="jobs in each of A's batches")
    parser.add_argument("--senders", type=int, default=2, help="A's batches in flight")
    parser.add_argument("--as-senders", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_senders:
        spec = json.loads(sys.stdin.read())
        print(json.dumps(trio.run(senders, spec["url"], spec["a"], spec["n"], spec["size"], spec["seconds"])))
        return
    with started_node(64, auth=True, CONVEYOR_TENANT_SUBMIT_RATE="1000", CONVEYOR_TENANT_SUBMIT_BURST="5000") as (
        url, database_url,
    ):
        a = {"Authorization": f"Bearer {bench_key(database_url, 'tenant-a')}"}
        b = {"Authorization": f"Bearer {bench_key(database_url, 'tenant-b')}"}
        trio.run(run, url, a, b, args)


if __name__ == "__main__":
    main()
