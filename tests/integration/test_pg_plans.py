"""The recorder's fenced updates join a JSON batch of rows to the jobs table. psycopg prepares a
statement after its fifth run, and PostgreSQL then keeps one generic plan for it: made while the
table was small, that plan was a hash join over a sequential scan of jobs, and it stayed while
the table grew (a queue's table starts empty and grows by thousands of rows a second, faster than
autovacuum analyzes it). In a 20,000-job benchmark it read 5,000,000 rows. Planned per batch, the
updates find their rows by primary key once the table is large."""

from __future__ import annotations

import uuid

import psycopg
import trio

from conveyor.stores import PostgresStore
from tests.helpers import wait_until

GROWN = 50_000
ROUNDS = 15


def _jobs_stats(database_url: str) -> tuple[int, int]:
    """(rows updated, rows read by sequential scans) of the jobs table, as the statistics have them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT n_tup_upd, seq_tup_read FROM pg_stat_user_tables WHERE relname = 'jobs'"
        ).fetchone()


async def test_the_fenced_updates_find_rows_by_primary_key_after_the_table_grew(database_url: str) -> None:
    ids = [str(uuid.uuid4()) for _ in range(10)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, tenant_id, type, payload, max_attempts, timeout_ms)"
            " SELECT unnest(%s::uuid[]), 't', 'sleep', '{}', 100, 1000",
            (ids,),
        )
    pg = PostgresStore(database_url, pool_size=1)  # one connection: every batch on the same one
    await pg.open()
    try:
        with trio.fail_after(60):

            def outcomes(attempt: int) -> list[dict[str, object]]:  # hand-backs: the jobs stay PENDING
                return [
                    {"id": i, "attempt": attempt, "new_attempt": attempt, "status": "PENDING",
                     "error": None, "result": None, "delay_ms": 0}
                    for i in ids
                ]

            # on a table of ten rows: past psycopg's prepare threshold (5 runs), and past the
            # custom plans PostgreSQL makes for a prepared statement before its generic one (5)
            for attempt in range(1, ROUNDS):
                started, finished = await pg.record([(i, attempt) for i in ids], outcomes(attempt))
                assert len(started) == len(finished) == len(ids)
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO jobs (id, tenant_id, type, payload, status, max_attempts, timeout_ms)"
                    " SELECT gen_random_uuid(), 'other', 'sleep', '{}', 'COMPLETED', 1, 1000"
                    " FROM generate_series(1, %s)",
                    (GROWN,),
                )
            started, finished = await pg.record([(i, ROUNDS) for i in ids], outcomes(ROUNDS))
            assert len(started) == len(finished) == len(ids)
    finally:
        await pg.close()  # a backend reports its statistics as it exits

    expected_updates = 2 * ROUNDS * len(ids)

    async def reported() -> bool:
        return _jobs_stats(database_url)[0] >= expected_updates

    with trio.fail_after(30):
        await wait_until(reported, interval=0.1)
    updated, scanned = _jobs_stats(database_url)
    assert updated == expected_updates
    # by primary key: no sequential scan of the grown table (a few of the ten-row table at first)
    assert scanned < GROWN, f"{scanned} rows read by sequential scans"
