"""A node on one Redis and on a 3-master Valkey Cluster, side by side in one run: enqueue-then-drain
throughput of no-op jobs spread over many tenants, and the CPU each job costs the node and the
Redis servers (from /proc).

Usage: python bench/cluster.py [--jobs N] [--tenants T] [--concurrency C] [--runs R] [--shards S]
The single Redis is a valkey-server of the bench's own (the one embedded mode ships, like the
cluster's), so both sides run the same server; the cluster is tests/redis_cluster.py's (3 masters,
3 replicas). Needs the local PostgreSQL (CONVEYOR_BENCH_ADMIN_URL). Kills what it starts by PID.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import throughput  # noqa: E402
from tests.redis_cluster import ValkeyCluster, _bin, cluster_port  # noqa: E402


def server_pids(ports: list[int]) -> dict[int, int]:
    """port -> pid of the Redis / Valkey server there (INFO server's process_id)."""
    out = {}
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        out[port] = int(client.info("server")["process_id"])
        client.close()
    return out


def measure(
    redis_url: str, ports: list[int], masters: list[int], n: int, tenants: int, concurrency: int, shards: int = 0
) -> dict[str, float]:
    """One node against these servers: its rate, and CPU µs per job of the node, of every server
    (replicas included), of the masters and of the busiest master."""
    throughput.REDIS_URL = redis_url
    pids = server_pids(ports)
    with throughput.started_node(concurrency, False, CONVEYOR_REDIS_SHARDS=str(shards)) as (node_url, url):
        node = throughput.NODE_PIDS[-1]
        throughput.drive(node_url, url, min(n, 2000), tenants=tenants)  # warm up: connections, scripts, JIT-free caches
        node_before, servers_before = throughput.cpu_seconds(node), {p: throughput.cpu_seconds(pid) for p, pid in pids.items()}
        rate = throughput.drive(node_url, url, n, tenants=tenants)
        node_cpu = throughput.cpu_seconds(node) - node_before
        servers = {p: throughput.cpu_seconds(pid) - servers_before[p] for p, pid in pids.items()}
    per_job = {p: cpu / n * 1e6 for p, cpu in servers.items()}
    return {"rate": rate, "node_us": node_cpu / n * 1e6, "redis_us": sum(per_job.values()),
            "masters_us": sum(per_job[p] for p in masters), "busiest_us": max(per_job[p] for p in masters)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--shards", type=int, default=0, help="CONVEYOR_REDIS_SHARDS on the cluster (0: its default)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-cluster-"))
    port = cluster_port(set())
    single = subprocess.Popen(
        [_bin("valkey-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    cluster = ValkeyCluster(root / "cluster")
    try:
        time.sleep(0.5)
        cluster.start()
        masters = cluster.masters()
        for run in range(args.runs):
            one = measure(f"redis://127.0.0.1:{port}/0", [port], [port], args.jobs, args.tenants, args.concurrency)
            three = measure(cluster.url, cluster.ports, masters, args.jobs, args.tenants, args.concurrency, args.shards)
            print(f"run {run + 1}: {args.jobs} no-op jobs over {args.tenants} tenants, one node, concurrency "
                  f"{args.concurrency}, cluster shards {args.shards or 'default'}")
            for name, m in (("one Redis", one), ("3-master cluster", three)):
                print(f"  {name:17} {m['rate']:7,.0f} jobs/s   CPU per job: node {m['node_us']:4.0f} µs, "
                      f"masters {m['masters_us']:4.0f} µs (busiest {m['busiest_us']:3.0f}), "
                      f"all servers {m['redis_us']:4.0f} µs")
            print(f"  ratio cluster/one Redis: {three['rate'] / one['rate']:.2f}")
    finally:
        single.kill()
        single.wait()
        cluster.stop()


if __name__ == "__main__":
    main()
