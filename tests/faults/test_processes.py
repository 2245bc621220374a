"""Faults of nodes: kill -9, a stall beyond the lease, a crash between commit and dispatch,
and cancellation of a job running on another node."""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import httpx
import trio

from tests.conftest import shard_map
from tests.faults.conftest import Cluster, submit_ledger
from tests.helpers import wait_until


async def test_kill_9_one_of_three_nodes_with_1000_jobs_running(cluster: Cluster, tenant: str) -> None:
    # a 10 s lease: three nodes of 400 executors on two cores must not lose leases by slowness
    lease = 10
    nodes = [
        await cluster.start(f"n{i}", CONVEYOR_CONCURRENCY=400, CONVEYOR_LEASE_SECONDS=lease)
        for i in range(3)
    ]
    with trio.fail_after(120):
        ids = await submit_ledger(nodes[0].url, tenant, 1000, ms=4000)
        await wait_until(lambda: len(cluster.starts()) >= 1000, interval=0.1)
        victim = nodes[1]
        await victim.kill()
        killed_at = trio.current_time()
        ended = {job for job, _, _ in cluster.ends()}
        in_flight = {job for job, node in cluster.starts() if node == "n1"} - ended
        statuses = await cluster.wait_terminal(tenant, 1000)
        took = trio.current_time() - killed_at
    assert set(statuses) == set(ids)
    assert Counter(statuses.values()) == {"COMPLETED": 1000}  # none lost, none failed
    assert took < lease + 30
    assert in_flight  # the victim really was running jobs
    assert cluster.duplicates() <= len(in_flight)


async def test_a_node_stalled_beyond_its_lease_cannot_record_late_outcomes(
    cluster: Cluster, tenant: str
) -> None:
    stalled = await cluster.start("stalled", CONVEYOR_CONCURRENCY=50)
    with trio.fail_after(90):
        ids = await submit_ledger(stalled.url, tenant, 50, ms=1500)
        await wait_until(lambda: len(cluster.starts()) >= 50, interval=0.05)
        stalled.signal(signal.SIGSTOP)
        try:
            healthy = await cluster.start("healthy", CONVEYOR_CONCURRENCY=50)
            # the leases (3 s) expire; the healthy node's reaper takes the jobs and runs them
            statuses = await cluster.wait_terminal(tenant, 50)
        finally:
            stalled.signal(signal.SIGCONT)
        # the stalled node wakes: its handlers finish, their outcomes must be refused
        await wait_until(lambda: sum(node == "stalled" for _, node, _ in cluster.ends()) >= 50, interval=0.1)
        # and its recorder has dealt with every outcome (it lets go of a lease once it has)
        async with httpx.AsyncClient(base_url=stalled.url, timeout=10) as client:
            await wait_until(lambda: gauge(client, "conveyor_leases_held", 0), interval=0.1)
        events = await trio.to_thread.run_sync(terminal_events, cluster, tenant)
        assert healthy.proc is not None
    assert set(statuses) == set(ids) and set(statuses.values()) == {"COMPLETED"}
    # every job ran on both nodes, and still exactly one terminal transition each
    assert Counter(job for job, _ in cluster.starts()) == {job: 2 for job in ids}
    assert Counter(events) == {job: 1 for job in ids}


def terminal_events(cluster: Cluster, tenant: str) -> list[str]:
    import json

    client = cluster.queue_redis()
    try:
        entries = client.xrange(cluster.feed_key(tenant))
    finally:
        client.close()
    out = []
    for _, fields in entries:
        if "d" in fields:
            event = json.loads(fields["d"])
            if event.get("status") in ("COMPLETED", "FAILED", "CANCELLED"):
                out.append(event["jobId"])
    return out


async def test_a_crash_between_commit_and_dispatch_loses_nothing(cluster: Cluster, tenant: str) -> None:
    doomed = await cluster.start("doomed", CONVEYOR_FAULTS="exit-after-commit")
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as client:
            try:
                await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 0}})
                raise AssertionError("the node should have died before answering")
            except httpx.HTTPError:
                pass
        assert await doomed.wait() == 70
        assert len(await trio.to_thread.run_sync(cluster.statuses, tenant)) == 1  # committed
        await cluster.start("rescuer")
        statuses = await cluster.wait_terminal(tenant, 1)
    assert list(statuses.values()) == ["COMPLETED"]
    assert cluster.duplicates() == 0


async def test_cancel_queued_delayed_and_running_on_another_node(cluster: Cluster, tenant: str) -> None:
    runner = await cluster.start("runner", CONVEYOR_CONCURRENCY=1, CONVEYOR_BACKOFF_BASE_MS="60000",
                                 CONVEYOR_BACKOFF_CAP_MS="60000")
    other = await cluster.start("other", CONVEYOR_CONCURRENCY=1)
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(60):
            # a webhook to a closed port fails its first attempt and waits 60 s for a retry
            r = await client.post(f"{runner.url}/jobs", json={
                "tenantId": tenant, "type": "webhook", "payload": {"url": "http://127.0.0.1:9/"}})
            delayed = r.json()["jobId"]

            async def attempted() -> bool:
                job = (await client.get(f"{runner.url}/jobs/{delayed}")).json()
                return job["attempts"] == 1 and job["status"] == "PENDING"

            await wait_until(attempted)
            # one long job occupies each node's single executor; the next one waits in the queue
            running = await submit_ledger(runner.url, tenant, 2, ms=60_000)
            await wait_until(lambda: len(cluster.starts()) == 2, interval=0.05)
            queued = (await submit_ledger(runner.url, tenant, 1, ms=0))[0]
            for job_id in (queued, delayed):  # cancelled at once, through the other node
                r = await client.post(f"{other.url}/jobs/{job_id}/cancel")
                assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
            here = {job for job, node in cluster.starts() if node == "runner"}
            assert len(here) == 1
            (on_runner,) = here
            r = await client.post(f"{other.url}/jobs/{on_runner}/cancel")  # runs on the runner
            assert r.status_code in (200, 202), r.text  # 200 if already stopped and recorded
            (on_other,) = set(running) - here
            r = await client.post(f"{runner.url}/jobs/{on_other}/cancel")
            assert r.status_code in (200, 202), r.text
            statuses = await cluster.wait_terminal(tenant, 4)
            # the executors are free again, and the queued job never ran
            for node in (runner, other):
                await wait_until(lambda node=node: executors_running(client, node.url))
            # nothing of the cancelled jobs is left in Redis for an executor to claim
            leftovers = await trio.to_thread.run_sync(redis_leftovers, cluster, [queued, delayed, *running])
    assert leftovers == []
    assert set(statuses.values()) == {"CANCELLED"}
    assert queued not in {job for job, _ in cluster.starts()}
    assert sorted(outcome for _, _, outcome in cluster.ends()) == ["cancelled", "cancelled"]
    assert await cluster_jobs_error(client, runner.url, on_runner) == "cancelled by request"


async def gauge(client: httpx.AsyncClient, name: str, value: float) -> bool:
    lines = (await client.get("/metrics")).text.splitlines()
    return f"{name} {value:g}" in lines


def redis_leftovers(cluster: Cluster, ids: list[str]) -> list[str]:
    """Which of these jobs still have an envelope, or sit in a ready queue or the delayed set."""
    client = cluster.queue_redis()
    bases = shard_map(cluster.config).bases()
    try:
        queued = {i for p in bases for key in client.scan_iter(f"{p}:ready:*") for i in client.zrange(key, 0, -1)}
        delayed = {i for p in bases for i in client.zrange(f"{p}:delayed", 0, -1)}
        envelopes = {key.rsplit(":", 1)[1] for p in bases for key in client.scan_iter(f"{p}:job:*")}
        return [i for i in ids if i in envelopes or i in queued or i in delayed]
    finally:
        client.close()


async def executors_running(client: httpx.AsyncClient, url: str) -> bool:
    body = (await client.get(f"{url}/health/ready")).json()
    return body["executors"]["running"] == 0


async def cluster_jobs_error(client: Any, url: str, job_id: str) -> str:
    async with httpx.AsyncClient(timeout=10) as fresh:
        return (await fresh.get(f"{url}/jobs/{job_id}")).json()["error"]


