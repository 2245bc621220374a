"""A node dies in the middle of a schedule's fire, inside its transaction or between its commit
and the job's dispatch, while another node runs: the schedule's jobs have neither a gap nor a
duplicate, and every one of them runs once."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
import trio

from tests.faults.conftest import Cluster
from tests.helpers import wait_until


def _fires(cluster: Cluster, tenant: str) -> list[tuple[datetime, str, str]]:
    """(scheduled_for, id, status) of the schedule's jobs, oldest fire first."""
    import psycopg

    with psycopg.connect(cluster.config.database_url) as conn:
        rows = conn.execute(
            "SELECT scheduled_for, id::text, status FROM jobs WHERE tenant_id = %s AND schedule_name = 'tick'"
            " ORDER BY scheduled_for", (tenant,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


@pytest.mark.parametrize("fault", ["fire-in-transaction", "fire-after-commit"])
async def test_a_node_dying_in_a_fire_makes_neither_a_gap_nor_a_duplicate(
    cluster: Cluster, tenant: str, fault: str
) -> None:
    doomed = await cluster.start("doomed", CONVEYOR_FAULTS=fault)
    survivor = await cluster.start("survivor")
    job = {"type": "ledger", "payload": {"ms": 0}}
    with trio.fail_after(90):
        async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as client:
            r = await client.put("/schedules/tick", json={"tenantId": tenant, "every": "1s", "job": job})
            assert r.status_code == 201, r.text
            # both nodes race for each fire; the doomed one dies at the first it wins
            with trio.fail_after(40):
                assert await doomed.wait() == 70
            died = len(await trio.to_thread.run_sync(_fires, cluster, tenant))
            await wait_until(lambda: _has(cluster, tenant, died + 4), interval=0.2)
            assert (await client.delete("/schedules/tick", params={"tenantId": tenant})).status_code == 204
        fires = await trio.to_thread.run_sync(_fires, cluster, tenant)
        statuses = await cluster.wait_terminal(tenant, len(fires))
    times = [f[0] for f in fires]
    assert len(times) == len(set(times))  # no duplicate fire
    assert all(b - a == timedelta(seconds=1) for a, b in zip(times, times[1:], strict=False)), times  # no gap
    assert set(statuses.values()) == {"COMPLETED"}  # the dying node's job too (reconciled)
    assert cluster.duplicates() == 0  # and each ran once


async def _has(cluster: Cluster, tenant: str, n: int) -> bool:
    return len(await trio.to_thread.run_sync(_fires, cluster, tenant)) >= n
