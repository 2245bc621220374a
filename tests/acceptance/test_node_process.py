"""Whole-node behaviour with real processes: kill -9 mid-flight, and graceful drain on SIGTERM.

Each test ends by counting the ledger in PostgreSQL: every accepted job terminal, none lost,
none left RUNNING.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from conveyor.config import Config
from tests.acceptance.nodes import NodeProcess
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def processes() -> AsyncIterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    with trio.move_on_after(20, shield=True):
        for proc in started:
            await proc.kill()


def counts(database_url: str, tenant: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM jobs WHERE tenant_id = %s GROUP BY status", (tenant,)
        ).fetchall()
    return dict(rows)


async def status_counts(database_url: str, tenant: str) -> dict[str, int]:
    return await trio.to_thread.run_sync(counts, database_url, tenant)


async def submit_sleepers(url: str, tenant: str, n: int, delay_ms: int) -> list[str]:
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for start in range(0, n, 1000):
            jobs = [{"tenantId": tenant, "type": "sleep", "payload": {"delayMs": delay_ms}}] * min(1000, n - start)
            r = await client.post("/jobs/batch", json={"jobs": jobs})
            assert r.status_code == 201, r.text
            ids += r.json()["jobIds"]
    return ids


async def test_kill_9_mid_flight_loses_nothing(
    make_config: Callable[..., Config], processes: list[NodeProcess], tenant: str, tmp_path: Path
) -> None:
    config = make_config()
    lease = 3
    env = {"CONVEYOR_CONCURRENCY": 300, "CONVEYOR_LEASE_SECONDS": lease}
    first = NodeProcess(config, tmp_path / "first.log", **env)
    processes.append(first)
    with trio.fail_after(120):
        url = await first.start()
        ids = await submit_sleepers(url, tenant, 400, delay_ms=4000)

        async def in_flight() -> bool:
            return (await status_counts(config.database_url, tenant)).get("RUNNING", 0) >= 250

        await wait_until(in_flight, interval=0.05)
        await first.kill()  # SIGKILL: no drain, no cleanup
        before = await status_counts(config.database_url, tenant)
        assert before.get("RUNNING", 0) >= 200, before

        second = NodeProcess(config, tmp_path / "second.log", **env)
        processes.append(second)
        await second.start()
        restarted = trio.current_time()

        async def all_terminal() -> dict[str, int] | None:
            now = await status_counts(config.database_url, tenant)
            return now if now.get("COMPLETED", 0) + now.get("FAILED", 0) == len(ids) else None

        final = await wait_until(all_terminal, interval=0.2)
        took = trio.current_time() - restarted
    assert final == {"COMPLETED": len(ids)}, final  # none lost, none stuck, none failed
    assert took < lease + 30


async def test_sigterm_drains_and_exits_0(
    make_config: Callable[..., Config], processes: list[NodeProcess], tenant: str, tmp_path: Path
) -> None:
    config = make_config()
    node = NodeProcess(
        config, tmp_path / "node.log",
        CONVEYOR_CONCURRENCY=10, CONVEYOR_DRAIN_GRACE_SECONDS=3, CONVEYOR_LEASE_SECONDS=30,
    )
    processes.append(node)
    with trio.fail_after(90):
        url = await node.start()
        short = await submit_sleepers(url, tenant, 5, delay_ms=1500)
        long = await submit_sleepers(url, tenant, 5, delay_ms=20_000)
        queued = await submit_sleepers(url, tenant, 20, delay_ms=0)

        async def ten_running() -> bool:
            return (await status_counts(config.database_url, tenant)).get("RUNNING", 0) == 10

        await wait_until(ten_running, interval=0.05)
        signalled = trio.current_time()
        node.signal(signal.SIGTERM)
        code = await node.wait()
        took = trio.current_time() - signalled
        assert code == 0
        assert took < 3 + 8  # grace plus hand-back and flush
        with psycopg.connect(config.database_url) as conn:
            rows = dict(conn.execute(
                "SELECT id::text, status || '/' || attempts FROM jobs WHERE tenant_id = %s", (tenant,)
            ).fetchall())
        # short jobs finished within the grace period; long ones were handed back with their
        # attempt uncounted; queued ones were never claimed; nothing is left RUNNING
        assert {rows[i] for i in short} == {"COMPLETED/1"}
        assert {rows[i] for i in long} == {"PENDING/0"}
        assert {rows[i] for i in queued} == {"PENDING/0"}
        log = (tmp_path / "node.log").read_text()
        assert "handing 5 unfinished jobs back" in log

        # a node started again runs what was handed back
        again = NodeProcess(config, tmp_path / "again.log", CONVEYOR_CONCURRENCY=30)
        processes.append(again)
        await again.start()

        async def all_done() -> bool:
            return (await status_counts(config.database_url, tenant)) == {"COMPLETED": 30}

        await wait_until(all_done, interval=0.2)


async def test_sigterm_closes_websockets_with_1001(
    make_config: Callable[..., Config], processes: list[NodeProcess], tmp_path: Path
) -> None:
    from trio_websocket import ConnectionClosed, open_websocket_url

    node = NodeProcess(make_config(), tmp_path / "node.log")
    processes.append(node)
    with trio.fail_after(30):
        url = await node.start()
        async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
            await ws.get_message()
            node.signal(signal.SIGTERM)
            code: Any = None
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as closed:
                code = closed.reason.code
        assert code == 1001
        assert await node.wait() == 0


async def test_two_nodes_share_the_work_and_run_each_job_once(
    make_config: Callable[..., Config], processes: list[NodeProcess], tmp_path: Path
) -> None:
    config = make_config()
    nodes = [NodeProcess(config, tmp_path / f"node{i}.log", CONVEYOR_CONCURRENCY=16) for i in range(2)]
    processes.extend(nodes)
    tenants = [f"scale-{i}-{tmp_path.name[-6:]}" for i in range(5)]
    with trio.fail_after(120):
        urls = [await node.start() for node in nodes]
        # submissions go to both nodes, as a load balancer would spread them
        ids: list[str] = []
        for i, tenant in enumerate(tenants):
            ids += await submit_sleepers(urls[i % 2], tenant, 600, delay_ms=5)

        async def all_completed() -> bool:
            done = [await status_counts(config.database_url, t) for t in tenants]
            return all(d == {"COMPLETED": 600} for d in done)

        await wait_until(all_completed, interval=0.2)
        finished = []
        async with httpx.AsyncClient() as client:
            for url in urls:
                text = (await client.get(f"{url}/metrics")).text
                line = next(x for x in text.splitlines() if x.startswith('conveyor_jobs_finished_total{outcome="completed"}'))
                finished.append(int(float(line.split()[-1])))
    with psycopg.connect(config.database_url) as conn:
        attempts = conn.execute(
            "SELECT max(attempts), min(attempts) FROM jobs WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchone()
    assert attempts == (1, 1)  # no job ran twice
    assert sum(finished) == len(ids) == 3000  # and every execution is accounted for
    assert min(finished) > 0, finished  # both nodes did work
