"""What pruning costs the hot path: node throughput while the pruner deletes a backlog of old
finished jobs, against the same node with nothing to prune, alternated in one run.

Usage: python bench/retention.py [--backlog 500000] [--jobs 20000] [--rounds 2]
Each side is a real `conveyor serve` on a fresh database holding --backlog finished jobs of a day
ago (made with SQL); "pruning" runs it with CONVEYOR_RETENTION_SECONDS=3600, so the whole
backlog is due, "idle" with 0 (kept forever). Prints jobs/s of --jobs no-op jobs on each side,
and how many backlog rows the pruner deleted meanwhile and per second.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from throughput import drive, started_node

BACKLOG = """
INSERT INTO jobs (id, tenant_id, type, payload, status, attempts, max_attempts, timeout_ms, result,
                  created_at, updated_at, payload_bytes, result_bytes)
SELECT gen_random_uuid(), 'old-' || (i %% 20), 'sleep', '{"delayMs": 0}', 'COMPLETED', 1, 3, 1000,
       '{"sleptMs": 0}', now() - interval '1 day', now() - interval '1 day' + make_interval(secs => i * 0.01), 14, 14
FROM generate_series(1, %(rows)s) AS i
"""


def old_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs WHERE tenant_id LIKE 'old-%%'", ()).fetchone()[0])


def side(retention: str, backlog: int, jobs: int) -> tuple[float, int, float]:
    with started_node(64, False, CONVEYOR_RETENTION_SECONDS=retention) as (node_url, url):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BACKLOG, {"rows": backlog})
            conn.execute("VACUUM ANALYZE jobs")
        before, began = old_rows(url), time.monotonic()
        rate = drive(node_url, url, jobs)
        took = time.monotonic() - began
        pruned = before - old_rows(url)
    return rate, pruned, pruned / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=500_000)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"idle": [], "pruning": []}
    for _ in range(args.rounds):
        for name, retention in (("idle", "0"), ("pruning", "3600")):
            rate, pruned, per_s = side(retention, args.backlog, args.jobs)
            rates[name].append(rate)
            print(f"{name:<8} {rate:,.0f} jobs/s; backlog rows pruned meanwhile: {pruned:,} ({per_s:,.0f}/s)")
    idle, pruning = statistics.median(rates["idle"]), statistics.median(rates["pruning"])
    print(f"median: idle {idle:,.0f} jobs/s, pruning {pruning:,.0f} jobs/s: {pruning / idle:.2f} of idle")


if __name__ == "__main__":
    main()
