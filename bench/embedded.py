"""The embedded servers (issue 12): start time, memory, and throughput against the machine's.

Usage: python bench/embedded.py [--jobs N] [--concurrency C] [--starts K]
- Start: time from `conveyor serve` (no URLs, a data directory) to its first 200 on /health,
  with a new data directory (cold: initdb and first migrations) and again with it (warm), K times.
- Memory: proportional set size (PSS, from /proc/<pid>/smaps_rollup: shared pages counted once)
  of the embedded PostgreSQL (all its processes) and Valkey, idle, and after a run of N jobs.
- Throughput: bench/throughput.py's enqueue-then-drain of N no-op jobs on the embedded servers,
  then on the machine's PostgreSQL and Redis (CONVEYOR_BENCH_ADMIN_URL, REDIS_URL), same run.
Kills what it starts by PID and deletes its data directories.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import throughput

from conveyor.embedded.servers import free_port


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def env_for(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**env, "CONVEYOR_DATA_DIR": str(data), "CONVEYOR_AUTH": "off", "CONVEYOR_LOG_LEVEL": "WARNING"}


def time_to_health(data: Path, port: int) -> tuple[float, subprocess.Popen[bytes]]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", "--port", str(port)], env=env_for(data),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1) as client:
        while True:
            try:
                if client.get("/health").status_code == 200:
                    return time.perf_counter() - started, proc
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"conveyor serve exited with {proc.returncode}")
            time.sleep(0.01)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def starts(k: int) -> None:
    cold, warm = [], []
    for _ in range(k):
        data = Path(tempfile.mkdtemp(prefix="conveyor-bench-data-"))
        try:
            port = free_port()
            seconds, proc = time_to_health(data, port)
            cold.append(seconds)
            stop(proc)
            seconds, proc = time_to_health(data, port)
            warm.append(seconds)
            stop(proc)
        finally:
            shutil.rmtree(data, ignore_errors=True)
    print(f"start to /health: cold (new data dir) median {statistics.median(cold):.2f} s "
          f"(min {min(cold):.2f}, max {max(cold):.2f}); warm median {statistics.median(warm):.2f} s "
          f"(min {min(warm):.2f}, max {max(warm):.2f}); {k} of each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    starts(args.starts)

    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-services-"))
    services = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "services"], env=env_for(data), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert services.stdout is not None
        urls = json.loads(services.stdout.readline())
        time.sleep(1)
        servers = descendants(services.pid)
        postgres = [p for p in servers if comm(p) == "postgres"]
        valkey = [p for p in servers if comm(p).startswith("valkey")]
        idle = pss_mib(postgres), pss_mib(valkey)
        machine = throughput.ADMIN_URL, throughput.REDIS_URL
        throughput.ADMIN_URL = urls["DATABASE_URL"].rpartition("/")[0] + "/postgres"
        throughput.REDIS_URL = urls["REDIS_URL"]
        embedded_rate = throughput.conveyor_rate(args.jobs, args.concurrency, auth=False).rate
        busy = pss_mib([p for p in descendants(services.pid) if comm(p) == "postgres"]), pss_mib(valkey)
        throughput.ADMIN_URL, throughput.REDIS_URL = machine
        machine_rate = throughput.conveyor_rate(args.jobs, args.concurrency, auth=False).rate
    finally:
        stop(services)  # type: ignore[arg-type]
        shutil.rmtree(data, ignore_errors=True)
    print(f"memory (PSS): PostgreSQL {idle[0]:.0f} MiB idle, {busy[0]:.0f} MiB after {args.jobs} jobs; "
          f"Valkey {idle[1]:.0f} MiB idle, {busy[1]:.0f} MiB after")
    print(f"throughput, {args.jobs} no-op jobs end to end: embedded {embedded_rate:,.0f} jobs/s, "
          f"machine's PostgreSQL and Redis {machine_rate:,.0f} jobs/s, ratio {embedded_rate / machine_rate:.2f}")


if __name__ == "__main__":
    main()
