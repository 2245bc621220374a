"""The PostgreSQL pool checks a connection before it lends it (with a round trip when anything
arrived on its socket while it sat in the pool): one the server terminated meanwhile is dropped
and replaced, so the call that borrows next does not fail (lending
recently used connections unchecked answered a submit with 503 when an embedded PostgreSQL was
taken over)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import trio

from conveyor.stores import PostgresStore, pg_trio
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


@asynccontextmanager
async def _ready_store(database_url: str) -> AsyncIterator[PostgresStore]:
    """A store whose pool holds a connection ready (a call then runs driven, on the event
    loop), within a deadline; closed after."""
    pg = PostgresStore(database_url, pool_size=2)
    await pg.open()
    try:
        with trio.fail_after(20):
            await pg.ping()
            yield pg
    finally:
        await pg.close()


async def test_a_call_that_finds_a_connection_ready_runs_on_the_event_loop_and_is_seen_through(
    database_url: str,
) -> None:
    """With a connection ready in the pool, a call runs in the event loop's thread (its waits
    awaited by trio), and other tasks run while it waits; a caller cancelled meanwhile does not
    cut the statement short, as a call in a worker thread would not."""
    async with _ready_store(database_url) as pg:
        loop_thread = threading.get_ident()
        assert await pg.run(lambda conn: threading.get_ident()) == loop_thread
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            slept = await pg.run(lambda conn: conn.execute("SELECT pg_sleep(0.3), 1").fetchone()[1])
            nursery.cancel_scope.cancel()
        assert slept == 1 and ticks >= 10  # the loop ran the ticker during the statement
        finished: list[int] = []
        with trio.move_on_after(0.1):  # cancelled while the statement runs
            await pg.run(lambda conn: finished.append(conn.execute("SELECT pg_sleep(0.4), 7").fetchone()[1]))
        assert finished == [7]
        assert await pg.run(lambda conn: conn.execute("SELECT 2").fetchone()[0]) == 2  # the connection is fine


async def test_a_driven_call_that_pauses_lets_other_tasks_run_between_its_parts(database_url: str) -> None:
    """pg_trio.pause inside a driven call gives the event loop a turn (other tasks run between
    the parts of a large result's conversion); in a worker thread it does nothing."""
    async with _ready_store(database_url) as pg:
        loop_thread = threading.get_ident()
        seen: list[str] = []

        def parts(conn: psycopg.Connection[Any]) -> list[int]:
            assert threading.get_ident() == loop_thread  # driven: on the event loop's thread
            rows = conn.execute("SELECT generate_series(1, 3)").fetchall()
            for (n,) in rows:
                seen.append(f"part {n}")
                pg_trio.pause()
            return [n for (n,) in rows]

        async def other() -> None:
            while True:
                seen.append("other")
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            assert await pg.run(parts) == [1, 2, 3]
            nursery.cancel_scope.cancel()
        # the loop ran the other task between the parts (each turn of the loop runs both
        # tasks once, in either order: so between the first part and the third)
        assert "other" in seen[seen.index("part 1"):seen.index("part 3")]
        assert await trio.to_thread.run_sync(lambda: pg_trio.pause() or "done") == "done"
