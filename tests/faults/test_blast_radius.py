"""One tenant's poison never reaches another (issue 11): results that PostgreSQL cannot store and
submissions full of NaN, against a real node, while a second tenant works beside them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import trio

from tests.faults.conftest import Cluster
from tests.helpers import wait_until

POISON = {  # 1e308 + 1e308 is Infinity: a result PostgreSQL's jsonb cannot hold
    "type": "data_processing",
    "payload": {"records": [{"v": 1e308}, {"v": 1e308}], "operation": "sum", "field": "v"},
}
NAN = b'{"tenantId": "%s", "type": "sleep", "payload": {"delayMs": 1, "x": NaN}}'


def restarts(tree: dict[str, Any]) -> int:
    return int(tree["restarts"]) + sum(restarts(c["supervisor"]) for c in tree["children"] if "supervisor" in c)


async def test_poison_results_and_nan_submissions_touch_no_other_tenant(cluster: Cluster) -> None:
    node = await cluster.start("n1", CONVEYOR_CONCURRENCY=64)
    a, b = "tenant-a", "tenant-b"
    answers: dict[str, Counter[int]] = {"a-nan": Counter(), "b": Counter()}
    b_jobs: list[str] = []
    poison: list[str] = []
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:

        async def b_submits(n: int, ms: int) -> None:
            for _ in range(n):
                r = await client.post("/jobs", json={"tenantId": b, "type": "sleep", "payload": {"delayMs": ms}})
                answers["b"][r.status_code] += 1
                if r.status_code == 201:
                    b_jobs.append(r.json()["jobId"])

        async def a_poisons() -> None:
            for _ in range(20):  # 20 in one second
                r = await client.post("/jobs", json={"tenantId": a, **POISON})
                assert r.status_code == 201, r.text
                poison.append(r.json()["jobId"])
                await trio.sleep(0.05)

        async def a_nan_stream(stop: trio.Event) -> None:
            while not stop.is_set():
                r = await client.post("/jobs", content=NAN % a.encode(), headers={"Content-Type": "application/json"})
                answers["a-nan"][r.status_code] += 1

        with trio.fail_after(90):
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(a_nan_stream, stop)
                async with trio.open_nursery() as work:
                    work.start_soon(b_submits, 50, 1000)  # B's 50 jobs run through the attack
                    work.start_soon(a_poisons)
                    work.start_soon(b_submits, 200, 0)  # and B keeps submitting meanwhile

                async def b_done() -> bool:
                    statuses = await trio.to_thread.run_sync(cluster.statuses, b)
                    return len(statuses) == len(b_jobs) and all(s == "COMPLETED" for s in statuses.values())

                await wait_until(b_done, interval=0.2)
                stop.set()

            async def poison_ended() -> dict[str, str] | None:
                statuses = await trio.to_thread.run_sync(cluster.statuses, a)
                return statuses if all(s in ("COMPLETED", "FAILED") for s in statuses.values()) else None

            ended = await wait_until(poison_ended, interval=0.2)
            errors = {(await client.get(f"/jobs/{job_id}")).json()["error"] for job_id in poison}
            ready = (await client.get("/health/ready")).json()
    assert answers["b"] == {201: 250}  # every one of B's submissions was accepted
    assert len(b_jobs) == 250  # and every one of B's jobs COMPLETED (b_done)
    assert set(answers["a-nan"]) == {400} and sum(answers["a-nan"].values()) >= 20
    assert set(ended) == set(poison) and set(ended.values()) == {"FAILED"}  # the NaNs stored nothing
    assert errors == {
        "the handler's result cannot be stored: result.value must be a finite number "
        "(NaN and Infinity cannot be stored)"
    }
    assert ready["status"] == "ready" and restarts(ready["supervisor"]) == 0, ready
    log = node.log_path.read_text()
    assert "crashed" not in log and "Traceback" not in log and "restarting" not in log
