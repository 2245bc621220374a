"""Cancel and retry by hand, Idempotency-Key over HTTP, and poison jobs."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from conveyor.node import Node
from tests.helpers import ADMIN_KEY, base_url, bearer, new_tenant, wait_until
from tests.integration import test_jobs
from tests.integration.test_jobs import HookServer, finished, submit
from tests.integration.test_websocket import next_message, subscribe, ws_url

hooks = test_jobs.hooks  # the fixture


async def status_of(client: httpx.AsyncClient, job_id: str) -> str:
    return str((await client.get(f"/jobs/{job_id}")).json()["status"])


async def test_cancel_queued_and_running_then_retry(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(concurrency=1)
    with trio.fail_after(30):
        async with (
            httpx.AsyncClient(base_url=base_url(node)) as client,
            open_websocket_url(ws_url(node)) as ws,
        ):
            await subscribe(ws, tenant)
            running = await submit(client, tenant, "sleep", {"delayMs": 20_000})
            await wait_until(lambda: node.pool.running_count() == 1)
            queued = await submit(client, tenant, "sleep", {"delayMs": 0})

            r = await client.post(f"/jobs/{queued}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
            assert r.json()["error"] == "cancelled by request"
            r = await client.post(f"/jobs/{running}/cancel")
            # 202 while its node stops it, or 200 if it was stopped and recorded before the answer
            assert (r.status_code, r.json()["status"]) in ((202, "RUNNING"), (200, "CANCELLED")), r.text
            await wait_until(lambda: node.pool.running_count() == 0)  # the executor was cancelled
            job = await finished(client, running)
            assert (job["status"], job["error"], job["attempts"]) == ("CANCELLED", "cancelled by request", 1)

            seen: dict[str, list[str]] = {}
            while seen.get(running, [])[-1:] != ["CANCELLED"]:
                msg = await next_message(ws)
                if msg["type"] == "JOB_UPDATE":  # the sleep job also reports JOB_PROGRESS
                    seen.setdefault(msg["jobId"], []).append(msg["status"])
            assert seen[queued] == ["PENDING", "CANCELLED"]  # never ran
            assert seen[running] == ["PENDING", "RUNNING", "CANCELLED"]

            for job_id in (queued, running):
                assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 409
            r = await client.post(f"/jobs/{queued}/retry", json={"maxAttempts": 0})
            assert r.status_code == 400 and r.json()["details"][0]["field"] == "maxAttempts"
            r = await client.post(f"/jobs/{queued}/retry")
            assert r.status_code == 200 and r.json()["status"] == "PENDING"
            retried = await next_message(ws)  # the retry is on the feed too
            assert (retried["jobId"], retried["status"]) == (queued, "PENDING")
            # attempts count runs: it never ran, and may run max_attempts times from now
            assert (r.json()["attempts"], r.json()["maxAttempts"]) == (0, node.config.max_attempts)
            assert (retried["attempts"], retried["maxAttempts"]) == (0, node.config.max_attempts)
            job = await finished(client, queued)
            assert (job["status"], job["attempts"], job["error"]) == ("COMPLETED", 1, None)
            assert (await client.post(f"/jobs/{queued}/retry")).status_code == 409
            for path in (f"/jobs/{uuid.uuid4()}/cancel", "/jobs/nope/cancel", f"/jobs/{uuid.uuid4()}/retry"):
                r = await client.post(path)
                assert r.status_code == 404 and r.json() == {"error": "Job not found"}


async def test_a_failed_job_retried_by_hand_runs_again(node: Node, tenant: str, hooks: HookServer) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "webhook", {"url": f"{hooks.url}/flaky"}, maxAttempts=1)
            job = await finished(client, job_id)
            assert (job["status"], job["attempts"]) == ("FAILED", 1)
            assert (await client.post(f"/jobs/{job_id}/retry", json={"maxAttempts": 2})).status_code == 200
            job = await finished(client, job_id)
    # it ran twice, of 1 + 2: the API counts runs (inside, attempt number 2 is skipped, so that a
    # late outcome of attempt 1 stays fenced out; test_fencing_fairness shows the fence)
    assert (job["status"], job["attempts"], job["maxAttempts"], job["error"]) == ("COMPLETED", 2, 3, None)
    assert len(hooks.hits["/flaky"]) == 2


async def test_idempotency_key_over_http(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY)
    key_a, key_b = await new_tenant(node, "tenant-a"), await new_tenant(node, "tenant-b")
    job = {"type": "sleep", "payload": {"delayMs": 0}}
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            first = await client.post("/jobs", json=job, headers={**bearer(key_a), "Idempotency-Key": "k1"})
            again = await client.post("/jobs", json=job, headers={**bearer(key_a), "Idempotency-Key": "k1"})
            assert first.status_code == again.status_code == 201
            assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
            # per tenant: B's k1 is another key
            other = await client.post("/jobs", json=job, headers={**bearer(key_b), "Idempotency-Key": "k1"})
            assert other.status_code == 201 and other.json() != first.json()
            # another body, or another endpoint, under the same key is refused
            changed = await client.post("/jobs", json={**job, "maxAttempts": 1},
                                        headers={**bearer(key_a), "Idempotency-Key": "k1"})
            assert changed.status_code == 422
            batch = await client.post("/jobs/batch", json={"jobs": [job]}, headers={**bearer(key_a), "Idempotency-Key": "k1"})
            assert batch.status_code == 422
            for bad in ("", "x" * 256, "naïve"):
                r = await client.post("/jobs", json=job, headers={**bearer(key_a), "Idempotency-Key": bad.encode()})
                assert r.status_code == 400, bad
            batches = [
                await client.post("/jobs/batch", json={"jobs": [job] * 3}, headers={**bearer(key_a), "Idempotency-Key": "b"})
                for _ in range(2)
            ]
            assert batches[0].json() == batches[1].json() and len(batches[0].json()["jobIds"]) == 3
            listed = (await client.get("/jobs?limit=100", headers=bearer(key_a))).json()
    assert listed["total"] == 1 + 3  # k1 once, the batch once


async def test_another_tenants_job_cannot_be_cancelled_or_retried(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY)
    key_a, key_b = await new_tenant(node, "tenant-a"), await new_tenant(node, "tenant-b")
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 10_000}}, headers=bearer(key_b))
            b_job = r.json()["jobId"]
            for action in ("cancel", "retry"):
                r = await client.post(f"/jobs/{b_job}/{action}", headers=bearer(key_a))
                assert (r.status_code, r.json()) == (404, {"error": "Job not found"})
            assert (await client.get(f"/jobs/{b_job}", headers=bearer(key_b))).json()["status"] in ("PENDING", "RUNNING")


async def test_poison_jobs_end_failed_and_others_keep_flowing(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(concurrency=2, handler_modules=("tests.integration.poison_handlers",))
    with trio.fail_after(40):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            crash = await submit(client, tenant, "crash", {}, maxAttempts=2)
            hang = await submit(client, tenant, "hang", {}, maxAttempts=2)
            sleepers = [await submit(client, tenant, "sleep", {"delayMs": 10}) for _ in range(20)]
            jobs = {job_id: await finished(client, job_id) for job_id in [crash, hang, *sleepers]}
            await wait_until(lambda: node.pool.busy() == 0)  # every slot came back
    assert (jobs[crash]["status"], jobs[crash]["attempts"]) == ("FAILED", 2)
    assert jobs[crash]["error"] == "MemoryError: the worker thread fell over"
    assert (jobs[hang]["status"], jobs[hang]["attempts"]) == ("FAILED", 2)
    assert jobs[hang]["error"] == "timed out after 200 ms"
    assert all(jobs[s]["status"] == "COMPLETED" for s in sleepers)


