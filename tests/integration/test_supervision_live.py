"""The node's own tree: a crashing actor is restarted with its channels intact, the restart shows
in readiness and metrics, and no job is lost with the batch the crash dropped."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from conveyor.actors import recorder
from tests.helpers import base_url, wait_until


async def test_a_crashed_recorder_is_restarted_and_nothing_is_lost(
    start_node: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = recorder.write_batch
    crashes = []

    async def crash_once(*args: Any) -> Any:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("injected recorder crash")
        return await real(*args)

    monkeypatch.setattr(recorder, "write_batch", crash_once)
    node = await start_node(lease_seconds=1.0, concurrency=4)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            jobs = [{"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 20}}] * 20
            assert (await client.post("/jobs/batch", json={"jobs": jobs})).status_code == 201

            async def all_completed() -> bool:
                _, total, _ = await node.pg.list_jobs(tenant, "COMPLETED", 1, 0)
                return total == 20

            # the crashed batch's jobs keep no lease here: they expire, are reaped and run again
            await wait_until(all_completed, interval=0.1)
            ready = (await client.get("/health/ready")).json()
            metrics = (await client.get("/metrics")).text
    assert crashes == [1]
    pipeline = next(c for c in ready["supervisor"]["children"] if c["name"] == "pipeline")
    children = {c["name"]: c for c in pipeline["supervisor"]["children"]}
    assert children["recorder"]["restarts"] == 1
    assert "injected recorder crash" in children["recorder"]["lastError"]
    # rest_for_one: the actors after the recorder were restarted with it
    assert children["executors"]["restarts"] == 1 and children["broadcaster"]["restarts"] == 0
    assert all(c["state"] == "running" for c in children.values())
    assert 'conveyor_supervisor_restarts_total{supervisor="pipeline"} 1' in metrics
