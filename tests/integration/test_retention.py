"""Retention through a real node: finished jobs are deleted once their tenant's retention has
passed, unfinished ones stay, and a tenant's own retention overrides the node's."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from conveyor.actors.retention import vacuum_if_left
from tests.helpers import base_url, new_tenant, wait_until

# The pruner runs every second: a finished job is gone within its retention plus about a second
# (a batch of 1,000 per tenant per statement, 50 batches a round, when there is a backlog).
BOUND_S = 1.0
SLACK_S = 2.0


async def submit(client: httpx.AsyncClient, tenant: str, **extra: Any) -> str:
    body = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}, **extra}
    r = await client.post("/jobs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["jobId"])


async def status(client: httpx.AsyncClient, job_id: str) -> str | None:
    r = await client.get(f"/jobs/{job_id}")
    if r.status_code == 404:
        assert r.json()["error"] == "Job not found"
        return None
    return str(r.json()["status"])


async def test_finished_jobs_are_deleted_after_the_retention_and_waiting_ones_stay(
    start_node: Any, tenant: str
) -> None:
    node = await start_node(retention_seconds=2)
    with trio.fail_after(40):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            done = [await submit(client, tenant) for _ in range(5)]
            failed = await submit(client, tenant, type="webhook", payload={"url": "http://127.0.0.1:9/x"}, maxAttempts=1)
            cancelled = await submit(client, tenant, delayMs=600_000)
            assert (await client.post(f"/jobs/{cancelled}/cancel")).status_code == 200
            waiting = await submit(client, tenant, delayMs=600_000)
            finished = {*done, failed, cancelled}
            for job_id in finished:
                await wait_until(lambda job_id=job_id: _ended(client, job_id))
            ended = trio.current_time()
            statuses = {job_id: await status(client, job_id) for job_id in finished}
            assert set(statuses.values()) == {"COMPLETED", "FAILED", "CANCELLED"}
            await wait_until(lambda: _all_gone(client, finished), interval=0.1)
            took = trio.current_time() - ended
            assert 2.0 - 0.5 <= took <= 2.0 + BOUND_S + SLACK_S
            assert await status(client, waiting) == "PENDING"
            assert (await client.get(f"/jobs/{failed}/events")).status_code == 404
            listed = (await client.get("/jobs", params={"tenantId": tenant})).json()
            assert [j["id"] for j in listed["jobs"]] == [waiting] and listed["total"] == 1
    assert node.metrics.value("conveyor_jobs_pruned_total") >= 7


async def _ended(client: httpx.AsyncClient, job_id: str) -> bool:
    return await status(client, job_id) in ("COMPLETED", "FAILED", "CANCELLED")


async def _all_gone(client: httpx.AsyncClient, ids: set[str]) -> bool:
    return all([await status(client, job_id) is None for job_id in ids])


async def test_a_tenant_s_own_retention_overrides_the_node_s(start_node: Any) -> None:
    node = await start_node(retention_seconds=3600)
    short, forever, default = "ret-short", "ret-forever", "ret-default"
    await new_tenant(node, short, retentionSeconds=1)
    await new_tenant(node, forever, retentionSeconds=0)
    await new_tenant(node, default)
    await wait_until(lambda: node.limits.of(short).retention_seconds == 1)
    with trio.fail_after(40):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            jobs = {t: [await submit(client, t) for _ in range(3)] for t in (short, forever, default)}
            for ids in jobs.values():
                for job_id in ids:
                    await wait_until(lambda job_id=job_id: _ended(client, job_id))
            await wait_until(lambda: _all_gone(client, set(jobs[short])), interval=0.1)
            await trio.sleep(2.5)  # more rounds of the pruner: the others' jobs stay
            for t in (forever, default):
                assert [await status(client, j) for j in jobs[t]] == ["COMPLETED"] * 3


async def test_the_pruner_vacuums_what_autovacuum_left(stores: Any) -> None:
    # this machine's PostgreSQL runs with autovacuum off, as some do: deleted rows stay dead
    # until the pruner vacuums, and a table whose live rows are flat would grow without end
    pg, _ = stores

    def churn(conn: Any) -> None:
        conn.execute(
            "INSERT INTO jobs (id, tenant_id, type, payload, status, max_attempts, timeout_ms)"
            " SELECT gen_random_uuid(), 'churn', 'sleep', '{}', 'COMPLETED', 1, 1000 FROM generate_series(1, 20000)"
        )
        conn.execute("DELETE FROM jobs WHERE tenant_id = 'churn'")

    await pg.run(churn)
    await wait_until(lambda: _dead_at_least(pg, 20_000), interval=0.2)  # the statistics lag a little
    await vacuum_if_left(pg)
    dead, _ = await pg.jobs_dead_rows()
    assert dead < 1000, dead


async def _dead_at_least(pg: Any, n: int) -> bool:
    return (await pg.jobs_dead_rows())[0] >= n
