"""`conveyor migrate` and concurrent node starts apply the schema once, under an advisory lock."""

from __future__ import annotations

import os
import secrets
import sys

import psycopg
import trio

from conveyor.stores.sqlfiles import _migrations
from tests.conftest import ADMIN_URL


async def test_concurrent_migrations_apply_once() -> None:
    name = f"conveyor_test_mig_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    env = {**os.environ, "DATABASE_URL": url}
    try:
        results = []
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(4):

                    async def run() -> None:
                        done = await trio.run_process(
                            [sys.executable, "-m", "conveyor", "migrate"], env=env,
                            capture_stdout=True, capture_stderr=True, check=False,
                        )
                        results.append(done)

                    nursery.start_soon(run)
        assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
        versions = [version for version, _, _ in _migrations()]
        assert versions == list(range(1, len(versions) + 1))
        applied = [r.stdout.decode() for r in results if str(versions).encode() in r.stdout]
        assert len(applied) == 1  # exactly one process applied the migrations
        assert sum(b"none pending" in r.stdout for r in results) == 3
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version FROM conveyor_migrations ORDER BY 1").fetchall() == [(v,) for v in versions]
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
