"""One tenant's heavy reads against everyone else's latency (issue 11).

Usage: python bench/reads.py [--seconds S] [--rounds R] [--readers N] [--ignore-retry-after] [--read-rate R]
A node with auth on; tenant A holds jobs with large payloads and a full feed (10,000 events).
Idle phases alternate with loaded ones (R rounds of S seconds each), in which N readers of A
(half GET /jobs/{id}/events, half GET /jobs?limit=100) read as fast as they may; a probe
measures GET /health and tenant B's POST /jobs, one request at a time, and the samples of each
kind of phase are pooled. Prints p50/p99 of each phase and the ratio loaded/idle. Readers honour 429 Retry-After
as a client library does; --ignore-retry-after makes them hammer on regardless. --read-rate sets
CONVEYOR_TENANT_READ_RATE (0: no read limit). Needs the local PostgreSQL and Redis; creates and
drops its own database and Redis key prefix, and kills the node it starts by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio
from throughput import NODE_PIDS, bench_key, cpu_seconds, started_node


def quantiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49], q[98]


async def seed(client: httpx.AsyncClient, a: dict[str, str]) -> list[str]:
    """A's jobs: 100 with ~700 KB payloads (what made lists 100 MB), then enough small ones for
    a full feed of 10,000 events."""
    ids: list[str] = []
    blob = "x" * 700_000
    for _ in range(100):
        r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0, "blob": blob}}, headers=a)
        r.raise_for_status()
        ids.append(r.json()["jobId"])
    small = [{"type": "sleep", "payload": {"delayMs": 0}}] * 1000
    for _ in range(4):
        r = await client.post("/jobs/batch", json={"jobs": small}, headers=a)
        r.raise_for_status()
        ids += r.json()["jobIds"]
    return ids


async def settled(client: httpx.AsyncClient, a: dict[str, str]) -> None:
    """Wait until A's seed jobs have all finished, so that "idle" is idle."""
    with trio.fail_after(120):
        while (await client.get("/stats", headers=a)).json()["unfinished"]:  # noqa: ASYNC110  (a node's state)
            await trio.sleep(0.2)
    await trio.sleep(1)


async def probe(client: httpx.AsyncClient, b: dict[str, str], seconds: float) -> tuple[list[float], list[float]]:
    """GET /health and B's POST /jobs, one after the other, for `seconds`: their latencies in ms."""
    health, submit = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        (await client.get("/health")).raise_for_status()
        t1 = time.perf_counter()
        r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}}, headers=b)
        r.raise_for_status()
        t2 = time.perf_counter()
        health.append((t1 - t0) * 1000)
        submit.append((t2 - t1) * 1000)
        await trio.sleep(0.02)
    return health, submit


async def reader(
    url: str, a: dict[str, str], ids: list[str], kind: str, stop: trio.Event, honour: bool, seen: Counter[str]
) -> None:
    rng = random.Random()
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=a) as client:
        while not stop.is_set():
            if kind == "events":
                r = await client.get(f"/jobs/{rng.choice(ids)}/events")
            else:
                r = await client.get("/jobs", params={"limit": 100, "offset": rng.randrange(0, 4000)})
            seen[f"{kind} {r.status_code}"] += 1
            seen[f"{kind} bytes"] += len(r.content)
            if r.status_code == 429 and honour:
                await trio.sleep(float(r.headers.get("Retry-After", "1")) * rng.uniform(1, 2))  # with jitter, as clients do


async def readers(
    url: str, a: dict[str, str], ids: list[str], n: int, seconds: float, honour: bool, kinds: list[str]
) -> Counter[str]:
    """n readers of A for `seconds` (run in a process of their own: see `run`)."""
    stop = trio.Event()
    seen: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(reader, url, a, ids, kinds[i % len(kinds)], stop, honour, seen)
        await trio.sleep(seconds)
        stop.set()
    return seen


async def beside(
    client: httpx.AsyncClient, b: dict[str, str], seconds: float, script: str, flag: str, spec: dict[str, Any]
) -> tuple[tuple[list[float], list[float]], Counter[str], float]:
    """One loaded phase: `script flag` loads the node from a process of its own (so that its
    client work does not sit in the probe's event loop and count as the node's latency), given
    `spec` as JSON on stdin, while the probe runs. Returns the probe's latencies, the Counter the
    process printed as JSON, and the node's CPU seconds while the probe ran."""
    done: list[bytes] = []

    async def load() -> None:
        cmd = [sys.executable, script, flag]
        done.append((await trio.run_process(cmd, stdin=json.dumps(spec).encode(), capture_stdout=True)).stdout)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(load)
        await trio.sleep(1)
        cpu0 = cpu_seconds(NODE_PIDS[0])
        loaded = await probe(client, b, seconds)
        cpu = cpu_seconds(NODE_PIDS[0]) - cpu0
    return loaded, Counter(json.loads(done[0])), cpu


async def with_readers(
    client: httpx.AsyncClient, b: dict[str, str], args: argparse.Namespace, a: dict[str, str], ids: list[str],
    readers_url: str,
) -> tuple[tuple[list[float], list[float]], Counter[str], float]:
    """One loaded phase: A's readers read while the probe runs (beside)."""
    spec = {"url": readers_url, "a": a, "ids": ids, "n": args.readers, "seconds": args.seconds + 2,
            "honour": not args.ignore_retry_after, "kinds": args.kinds.split(",")}
    return await beside(client, b, args.seconds, str(Path(__file__)), "--as-readers", spec)


async def run(
    url: str, a: dict[str, str], b: dict[str, str], args: argparse.Namespace, readers_url: str
) -> None:
    """Probe the node at url; A's readers read the node at readers_url (the same one, or with
    --control another node on the same machine, PostgreSQL and Redis)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async with httpx.AsyncClient(base_url=readers_url, timeout=60) as seeding:
            ids = await seed(seeding, a)
            await settled(seeding, a)
        pid = NODE_PIDS[0]
        idle: tuple[list[float], list[float]] = ([], [])
        loaded: tuple[list[float], list[float]] = ([], [])
        seen: Counter[str] = Counter()
        cpu_idle = cpu_loaded = 0.0
        # idle and loaded phases alternate, so that a drift in the machine's speed falls on both
        for _ in range(args.rounds):
            cpu0 = cpu_seconds(pid)
            for into, values in zip(idle, await probe(client, b, args.seconds), strict=True):
                into += values
            cpu1 = cpu_seconds(pid)
            phase, used, cpu = await with_readers(client, b, args, a, ids, readers_url)
            for into, values in zip(loaded, phase, strict=True):
                into += values
            seen += used
            cpu_idle += cpu1 - cpu0
            cpu_loaded += cpu
    if args.verbose:
        for name, i in (("health", 0), ("submit", 1)):
            for phase, values in (("idle", idle[i]), ("loaded", loaded[i])):
                q = statistics.quantiles(values, n=100)
                print(f"  {name} {phase}: n={len(values)} p90 {q[89]:.1f} p95 {q[94]:.1f} p99 {q[98]:.1f} max {max(values):.1f}")
    for name, i in (("GET /health     ", 0), ("B's POST /jobs  ", 1)):
        (p50_idle, p99_idle), (p50_load, p99_load) = quantiles(idle[i]), quantiles(loaded[i])
        print(f"{name} idle p50 {p50_idle:6.1f} ms p99 {p99_idle:6.1f} ms | "
              f"with readers p50 {p50_load:6.1f} ms p99 {p99_load:6.1f} ms | p99 ratio {p99_load / p99_idle:4.2f}")
    probed = args.seconds * args.rounds
    print(f"node CPU: idle {100 * cpu_idle / probed:.0f} %, with readers "
          f"{100 * cpu_loaded / probed:.0f} % of a core (probe included)")
    for kind in ("events", "list"):
        total = sum(n for k, n in seen.items() if k.startswith(kind) and not k.endswith("bytes"))
        ok = seen[f"{kind} 200"]
        print(f"A's {kind:6} reads: {total} in {args.rounds * (args.seconds + 2):.0f} s, {ok} answered 200, "
              f"{seen[f'{kind} 429']} refused 429, {seen[f'{kind} bytes'] / max(1, total) / 1024:.0f} KiB per answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="idle and loaded phases, alternated")
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--ignore-retry-after", action="store_true")
    parser.add_argument("--kinds", default="events,list", help="what the readers read (events, list or both)")
    parser.add_argument("--read-rate", help="CONVEYOR_TENANT_READ_RATE for the node (default: its default)")
    parser.add_argument("--verbose", action="store_true", help="more quantiles of each phase")
    parser.add_argument(
        "--control", action="store_true",
        help="A's readers read another node (same machine and stores): what the machine, not the node, adds",
    )
    parser.add_argument("--as-readers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_readers:
        spec = json.loads(sys.stdin.read())
        seen = trio.run(
            readers, spec["url"], spec["a"], spec["ids"], spec["n"], spec["seconds"], spec["honour"], spec["kinds"]
        )
        print(json.dumps(seen))
        return
    settings = {"CONVEYOR_TENANT_READ_RATE": args.read_rate} if args.read_rate is not None else {}
    with contextlib.ExitStack() as nodes:
        url, database_url = nodes.enter_context(started_node(16, auth=True, **settings))
        b = {"Authorization": f"Bearer {bench_key(database_url, 'tenant-b')}"}
        readers_url, readers_db = url, database_url
        if args.control:
            readers_url, readers_db = nodes.enter_context(started_node(16, auth=True, **settings))
        a = {"Authorization": f"Bearer {bench_key(readers_db, 'tenant-a')}"}
        trio.run(run, url, a, b, args, readers_url)


if __name__ == "__main__":
    main()
