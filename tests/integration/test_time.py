"""Jobs in time and order through a real node: delayed jobs (delayMs, runAt) and priorities."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import trio

from conveyor.model import NewJob
from conveyor.node import Node
from tests.helpers import base_url, dispatch, wait_until
from tests.integration import probe_handlers

PROBES = ("tests.integration.probe_handlers",)
# The scheduler moves a due job to its ready queue at most 250 ms after it is due (its longest
# sleep); an idle node claims it within milliseconds of that. The tests allow a second more.
RESOLUTION_S = 0.25
SLACK_S = 1.0


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def submit(client: httpx.AsyncClient, tenant: str, **extra: Any) -> str:
    body = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}, **extra}
    r = await client.post("/jobs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["jobId"])


async def first_seen_running(client: httpx.AsyncClient, job_id: str) -> tuple[float, dict[str, Any]]:
    """When (trio's clock) the job was first seen past PENDING, and the job then."""
    while True:
        job = (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] != "PENDING":
            return trio.current_time(), job
        await trio.sleep(0.01)


async def started_at(client: httpx.AsyncClient, job_id: str) -> datetime:
    """When PostgreSQL recorded the job RUNNING, from its events."""
    events = (await client.get(f"/jobs/{job_id}/events")).json()["events"]
    return min(parse(e["updatedAt"]) for e in events if e.get("status") == "RUNNING")


async def test_a_delayed_job_runs_no_earlier_than_due_and_on_time(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            sent = trio.current_time()
            job_id = await submit(client, tenant, delayMs=1500)
            job = (await client.get(f"/jobs/{job_id}")).json()
            assert job["status"] == "PENDING"
            assert parse(job["runAt"]) - parse(job["createdAt"]) >= timedelta(milliseconds=1500)
            seen, _ = await first_seen_running(client, job_id)
            assert 1.5 <= seen - sent <= 1.5 + RESOLUTION_S + SLACK_S
            await wait_until(lambda: _status(client, job_id, "COMPLETED"))
            assert await started_at(client, job_id) >= parse(job["runAt"])


async def test_run_at_with_an_offset_is_honoured_and_shown_in_utc(node: Node, tenant: str) -> None:
    due = datetime.now(UTC) + timedelta(seconds=1.2)
    local = due.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, runAt=local)
            job = (await client.get(f"/jobs/{job_id}")).json()
            assert job["runAt"].endswith("Z") and abs(parse(job["runAt"]) - due) < timedelta(milliseconds=1)
            _, running = await first_seen_running(client, job_id)
            assert datetime.now(UTC) >= due
            await wait_until(lambda: _status(client, job_id, "COMPLETED"))
            assert await started_at(client, job_id) >= due
            # a runAt in the past is due at once
            past = (datetime.now(UTC) - timedelta(days=3)).isoformat()
            sent = trio.current_time()
            late = await submit(client, tenant, runAt=past)
            seen, _ = await first_seen_running(client, late)
            assert seen - sent < SLACK_S


async def _status(client: httpx.AsyncClient, job_id: str, status: str) -> bool:
    return bool((await client.get(f"/jobs/{job_id}")).json()["status"] == status)


async def test_a_delayed_job_survives_a_redis_wipe(start_node: Any, tenant: str) -> None:
    node = await start_node(reconcile_seconds=0.3)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, delayMs=3500)
            job = (await client.get(f"/jobs/{job_id}")).json()
            redis = node.redis
            await trio.to_thread.run_sync(lambda: _wipe(redis.client, redis.prefix))
            assert not await trio.to_thread.run_sync(lambda: redis.client.zscore(redis.tkey(tenant, "delayed"), job_id))
            # the reconciler puts it back in the delayed set (from run_at), not on a ready queue
            await wait_until(lambda: trio.to_thread.run_sync(lambda: redis.client.zscore(redis.tkey(tenant, "delayed"), job_id)))
            assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "PENDING"
            await wait_until(lambda: _status(client, job_id, "COMPLETED"))
            assert await started_at(client, job_id) >= parse(job["runAt"])


def _wipe(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


async def test_a_waiting_delayed_job_can_be_cancelled(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, delayMs=60_000)
            r = await client.post(f"/jobs/{job_id}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
            redis = node.redis
            await wait_until(lambda: trio.to_thread.run_sync(lambda: not redis.client.exists(redis.tkey(tenant, "job", job_id))))
            assert await trio.to_thread.run_sync(lambda: redis.client.zscore(redis.tkey(tenant, "delayed"), job_id)) is None
            # and a retry makes it due now
            r = await client.post(f"/jobs/{job_id}/retry")
            assert r.status_code == 200, r.text
            await wait_until(lambda: _status(client, job_id, "COMPLETED"))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"delayMs": -1}, "delayMs"),
        ({"delayMs": 1.5}, "delayMs"),
        ({"delayMs": "10"}, "delayMs"),
        ({"delayMs": True}, "delayMs"),
        ({"delayMs": 367 * 86_400_000}, "delayMs"),
        ({"delayMs": 10, "runAt": "2030-01-01T00:00:00Z"}, "runAt"),
        ({"runAt": "2030-01-01T00:00:00"}, "runAt"),  # no offset
        ({"runAt": "tomorrow"}, "runAt"),
        ({"runAt": 1893456000}, "runAt"),
        ({"runAt": "9999-12-31T23:59:59+00:00"}, "runAt"),
        ({"runAt": "0001-01-01T00:00:00+01:00"}, "runAt"),
        ({"priority": -1}, "priority"),
        ({"priority": 10}, "priority"),
        ({"priority": 2.0}, "priority"),
        ({"priority": None}, "priority"),
    ],
)
async def test_bad_timing_fields_are_refused_by_name(node: Node, tenant: str, extra: dict[str, Any], field: str) -> None:
    async with httpx.AsyncClient(base_url=base_url(node)) as client:
        body = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}, **extra}
        r = await client.post("/jobs", json=body)
        assert r.status_code == 400, r.text
        assert [d["field"] for d in r.json()["details"]] == [field]
        r = await client.post("/jobs/batch", json={"jobs": [{**body, "tenantId": tenant}]})
        assert r.status_code == 400 and [d["field"] for d in r.json()["details"]] == [f"jobs[0].{field}"]
        listed = (await client.get("/jobs", params={"tenantId": tenant})).json()
        assert listed["total"] == 0  # nothing stored


async def test_the_most_urgent_job_runs_next(start_node: Any, tenant: str) -> None:
    probe_handlers.reset()
    node = await start_node(concurrency=1, handler_modules=PROBES)
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            blocker = await submit(client, tenant, type="probe", payload={"ms": 800})
            await wait_until(lambda: probe_handlers.ORDER == [blocker])
            bulk = [{"tenantId": tenant, "type": "probe", "payload": {"ms": 0}, "priority": 9} for _ in range(200)]
            r = await client.post("/jobs/batch", json={"jobs": bulk})
            assert r.status_code == 201, r.text
            middle = await submit(client, tenant, type="probe", payload={"ms": 0})  # the default, 5
            urgent = await submit(client, tenant, type="probe", payload={"ms": 0}, priority=0)
            assert (await client.get(f"/jobs/{urgent}")).json()["priority"] == 0
            await wait_until(lambda: len(probe_handlers.ORDER) == 203, interval=0.1)
    assert probe_handlers.ORDER[:3] == [blocker, urgent, middle]
    assert probe_handlers.ORDER[3:] == r.json()["jobIds"]  # FIFO within a priority


async def test_priority_orders_a_tenant_and_leaves_the_rotation_alone(start_node: Any) -> None:
    probe_handlers.reset()
    node = await start_node(concurrency=1, handler_modules=PROBES)
    a, b = "prio-a", "prio-b"
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            blocker = await submit(client, "prio-c", type="probe", payload={"ms": 800})
            await wait_until(lambda: probe_handlers.ORDER == [blocker])
            for tenant, priority in ((a, 9), (b, 9)):
                jobs = [{"tenantId": tenant, "type": "probe", "payload": {"ms": 0}, "priority": priority}] * 20
                assert (await client.post("/jobs/batch", json={"jobs": jobs})).status_code == 201
            # A's urgent jobs jump ahead of A's bulk, but not ahead of B's turn
            urgent = [await submit(client, a, type="probe", payload={"ms": 0}, priority=0) for _ in range(5)]
            await wait_until(lambda: len(probe_handlers.STARTED) == 46, interval=0.1)
    tenants = [t for t, _ in probe_handlers.STARTED[1:]]
    if node.redis.shards.count == 1:
        assert tenants[:40] == [a, b] * 20, tenants  # one each per turn of the ring, as without priorities
    else:  # A and B on two shards: turn by turn too, whichever went first (shards.Rotation)
        assert all(abs(tenants[:i].count(a) - tenants[:i].count(b)) <= 2 for i in range(41)), tenants
        assert tenants[:40].count(a) == 20, tenants
    a_order = [i for i, (t, _) in zip(probe_handlers.ORDER[1:], probe_handlers.STARTED[1:], strict=True) if t == a]
    assert a_order[:5] == urgent


async def test_ready_lists_of_an_earlier_version_are_moved_to_the_ready_queues(stores: Any, tenant: str) -> None:
    _, redis = stores
    jobs = [NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, 3, 1000) for _ in range(3)]
    assert await dispatch(redis, jobs) == 3

    def as_before() -> None:  # the ready queue as a list, as versions before priorities kept it
        redis.client.delete(redis.tkey(tenant, "ready", tenant))
        redis.client.rpush(redis.tkey(tenant, "q", tenant), *[j.id for j in jobs])

    await trio.to_thread.run_sync(as_before)
    assert await redis.upgrade() == 3
    assert await redis.upgrade() == 0
    assert not await trio.to_thread.run_sync(lambda: redis.client.exists(redis.tkey(tenant, "q", tenant)))
    claimed = await redis.claim(10, node="n", lease_ms=60_000)
    assert [c.id for c in claimed] == [j.id for j in jobs]
