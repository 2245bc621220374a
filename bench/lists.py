"""GET /jobs on a big table: a tenant with a million jobs (and a million of other tenants), every
combination of the status and type filters, first pages and deep ones.

Usage: python bench/lists.py [--rows 1000000] [--requests 40]
The rows are made with SQL (generate_series) in the fresh database of a real `conveyor serve`
(auth off, retention off), then VACUUM ANALYZE and a CHECKPOINT. Prints p50/p99 per filter combination over
--requests first pages each, the worst p99, and the time of a page 500,000 jobs deep by OFFSET
and by cursor. Needs the local PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
import psycopg
from throughput import started_node

STATUSES = (None, "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
TYPES = (None, "sleep", "webhook", "email", "data_processing")
TENANT = "big"

BUILD = """
INSERT INTO jobs (id, tenant_id, type, payload, status, attempts, max_attempts, timeout_ms, error,
                  result, run_at, created_at, updated_at, payload_bytes, result_bytes)
SELECT gen_random_uuid(), %(tenant)s,
       CASE WHEN r < 0.70 THEN 'sleep' WHEN r < 0.90 THEN 'webhook' WHEN r < 0.99 THEN 'email'
            ELSE 'data_processing' END,
       '{"delayMs": 0}'::jsonb,
       CASE WHEN s < 0.90 THEN 'COMPLETED' WHEN s < 0.95 THEN 'FAILED' WHEN s < 0.99 THEN 'CANCELLED'
            ELSE 'PENDING' END,
       1, 3, 1000, NULL, NULL,
       -- the PENDING ones are due in 300 days: the reconciler puts them in the delayed set
       CASE WHEN s >= 0.99 THEN now() + interval '300 days' ELSE now() END,
       now() - make_interval(secs => i * 0.5), now() - make_interval(secs => i * 0.5), 14, 0
FROM (SELECT i, random() AS r, random() AS s FROM generate_series(1, %(rows)s) AS i) AS g
"""


def build(database_url: str, rows: int) -> None:
    began = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(BUILD, {"tenant": TENANT, "rows": rows})
        for n in range(10):  # as many rows again, of ten other tenants
            conn.execute(BUILD, {"tenant": f"other-{n}", "rows": rows // 10})
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("CHECKPOINT")  # the bulk load's writes flushed now, not during the timing
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('jobs'))").fetchone()
    print(f"built {rows:,} jobs of {TENANT!r} and {rows:,} of others in {time.monotonic() - began:.0f} s; jobs table {size[0] if size else '?'}")


def timed(client: httpx.Client, params: dict[str, str]) -> tuple[float, dict[str, object]]:
    began = time.perf_counter()
    r = client.get("/jobs", params=params)
    elapsed = (time.perf_counter() - began) * 1000
    r.raise_for_status()
    return elapsed, r.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with started_node(concurrency=8, auth=False, CONVEYOR_RETENTION_SECONDS="0") as (url, database_url):
        build(database_url, args.rows)
        worst = 0.0
        with httpx.Client(base_url=url, timeout=30) as client:
            for status in STATUSES:
                for job_type in TYPES:
                    params = {"tenantId": TENANT, **({"status": status} if status else {}), **({"type": job_type} if job_type else {})}
                    timed(client, params)  # warm
                    times, body = [], {}
                    for _ in range(args.requests):
                        elapsed, body = timed(client, params)
                        times.append(elapsed)
                    q = statistics.quantiles(times, n=100)
                    worst = max(worst, q[98])
                    print(f"status={status or '-':<9} type={job_type or '-':<15} p50 {q[49]:5.1f} ms  p99 {q[98]:5.1f} ms  "
                          f"total {body['total']:>9,} ({'exact' if body['totalExact'] else 'estimate'})")
            print(f"worst p99 over every combination: {worst:.1f} ms")
            deep = args.rows // 2
            by_offset, body = timed(client, {"tenantId": TENANT, "offset": str(deep), "limit": "100"})
            # the page after that one, by its cursor (as a walk by cursor would reach it)
            by_cursor = [timed(client, {"tenantId": TENANT, "limit": "100", "cursor": str(body["nextCursor"])})[0]
                         for _ in range(args.requests)]
            print(f"a page {deep:,} deep: by offset {by_offset:.1f} ms, by cursor p50 {statistics.median(by_cursor):.1f} ms")


if __name__ == "__main__":
    main()
