"""How long the migrations after 0005 take on a big jobs table (they build indexes while holding
the table's write lock): a fresh database at migration 0005 with --rows finished jobs (made with
SQL), then each later migration, timed.

Usage: python bench/migrate.py [--rows 2000000]
Needs the local PostgreSQL; makes and drops its own database.
"""

from __future__ import annotations

import argparse
import secrets
import time

import psycopg
from throughput import ADMIN_URL

from conveyor.stores.sqlfiles import _migrations

ROWS = """
INSERT INTO jobs (id, tenant_id, type, payload, status, attempts, max_attempts, timeout_ms, created_at, updated_at)
SELECT gen_random_uuid(), 't' || (i %% 50), CASE WHEN i %% 3 = 0 THEN 'email' ELSE 'sleep' END, '{"delayMs": 0}',
       'COMPLETED', 1, 3, 1000, now() - make_interval(secs => i), now() - make_interval(secs => i)
FROM generate_series(1, %(rows)s) AS i
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    rows = parser.parse_args().rows
    name = f"conveyor_bench_mig_{secrets.token_hex(3)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(f"{ADMIN_URL.rpartition('/')[0]}/{name}", autocommit=True) as conn:
            migrations = _migrations()
            for version, _, sql in migrations:
                if version <= 5:
                    conn.execute(sql)
            conn.execute(ROWS, {"rows": rows})
            conn.execute("VACUUM ANALYZE jobs")
            for version, label, sql in migrations:
                if version > 5:
                    began = time.monotonic()
                    conn.execute(sql)
                    print(f"migration {version:04d}_{label}: {time.monotonic() - began:.1f} s on {rows:,} rows")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
