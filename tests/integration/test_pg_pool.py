"""The PostgreSQL pool checks a connection before it lends it: one the server terminated while it
sat in the pool is dropped and replaced, so the call that borrows next does not fail (lending
recently used connections unchecked answered a submit with 503 when an embedded PostgreSQL was
taken over)."""

from __future__ import annotations

import psycopg
import trio

from conveyor.stores import PostgresStore
from tests.helpers import wait_until


async def test_a_connection_terminated_in_the_pool_is_replaced_before_it_is_lent(database_url: str) -> None:
    pg = PostgresStore(database_url, pool_size=1)
    await pg.open()
    try:
        with trio.fail_after(20):
            first = await pg.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            with psycopg.connect(database_url, autocommit=True) as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone()[0]

                async def gone() -> bool:  # the backend has sent its goodbye and exited
                    return not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (first,)).fetchone()

                await wait_until(gone, interval=0.02)
            second = await pg.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            assert second != first
    finally:
        await pg.close()
