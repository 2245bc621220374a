"""conveyor.client against a real node with auth on: the blocking Client (in a thread, since the
node runs on this test's trio loop), AsyncClient under trio, and AsyncClient under asyncio (in a
thread of its own): every method, the error mapping, wait() and events()."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
import trio

from conveyor.client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    Invalid,
    NotFound,
    Unauthorized,
    WaitTimeout,
)
from conveyor.node import Node
from tests.helpers import base_url, new_tenant


@pytest.fixture
async def served(start_node: Any, tenant: str) -> tuple[str, str]:
    node: Node = await start_node(auth=True, max_attempts=1)
    return base_url(node), await new_tenant(node, tenant)


async def test_blocking_client_does_every_call(served: tuple[str, str], tenant: str) -> None:
    url, key = served

    def scenario() -> None:
        with Client(url, key) as client:
            job_id = client.submit("sleep", {"delayMs": 10}, max_attempts=2)
            job = client.wait(job_id, timeout=20)
            assert (job.id, job.status, job.attempts, job.max_attempts, job.tenant_id) == (
                job_id, "COMPLETED", 1, 2, tenant)
            assert job.created_at is not None and job.updated_at is not None and job.done
            ids = client.submit_many([("sleep", {"delayMs": 0})] * 150)
            assert len(ids) == 150 and len(set(ids)) == 150
            listed = [j.id for j in client.list()]  # more than a page: iterated across pages
            assert set(ids) | {job_id} <= set(listed) and len(listed) == len(set(listed))
            due = datetime.now(UTC) + timedelta(hours=1)
            later = client.get(client.submit("sleep", {"delayMs": 0}, priority=1, run_at=due))
            assert later.priority == 1 and later.run_at is not None and abs((later.run_at - due).total_seconds()) < 0.01
            soon = client.get(client.submit("sleep", {"delayMs": 0}, delay_ms=60_000))
            assert soon.priority == 5 and soon.run_at is not None and soon.created_at is not None
            assert (soon.run_at - soon.created_at).total_seconds() >= 60
            client.cancel(later.id), client.cancel(soon.id)
            nightly = client.put_schedule("nightly", "sleep", {"delayMs": 0}, cron="0 3 * * *", timezone="Asia/Tokyo")
            assert nightly.timezone == "Asia/Tokyo" and nightly.next_fire_at is not None
            assert nightly.next_fire_at.astimezone(ZoneInfo("Asia/Tokyo")).hour == 3
            assert client.get_schedule("nightly").cron == "0 3 * * *"
            assert client.pause_schedule("nightly").next_fire_at is None
            assert [s.name for s in client.list_schedules()] == ["nightly"]
            client.delete_schedule("nightly")
            assert client.list_schedules() == []
            long = client.submit("sleep", {"delayMs": 60_000})
            assert client.get(long).status in ("PENDING", "RUNNING")
            cancelled = client.cancel(long)
            assert cancelled.status in ("CANCELLED", "RUNNING")
            ended = client.wait(long, timeout=20)
            assert ended.status == "CANCELLED"
            again = client.retry(long, max_attempts=1)
            assert again.status == "PENDING" and again.max_attempts >= 1
            client.cancel(long)
            stats = client.stats()
            assert stats.tenant_id == tenant and stats.unfinished >= 0 and stats.waiting >= 0
            with pytest.raises(Conflict) as conflict:
                client.cancel(job_id)  # ended: 409
            assert conflict.value.status == 409 and "COMPLETED" in conflict.value.message
            with pytest.raises(NotFound):
                client.get("00000000-0000-4000-8000-000000000000")
            for hostile in (f"{job_id}/cancel", "../stats", "?status=FAILED"):
                with pytest.raises(ApiError) as stray:  # the id stays one path segment
                    client.cancel(hostile) if "cancel" in hostile else client.get(hostile)
                assert stray.value.status in (400, 404), hostile
            with pytest.raises(Invalid) as invalid:
                client.submit("fax", {})
            assert invalid.value.status == 400 and [d["field"] for d in invalid.value.details] == ["type"]
            with pytest.raises(TypeError):
                client.submit("sleep", {"delayMs": 1}, max_attempt=1)  # a typo is not sent
        with Client(url, "cvk_nope") as stranger:
            with pytest.raises(Unauthorized) as refused:
                stranger.get(job_id)
            assert refused.value.status == 401
            with pytest.raises(Unauthorized):
                next(stranger.events())

    with trio.fail_after(90):
        await trio.to_thread.run_sync(scenario)


async def test_blocking_wait_times_out_while_the_node_keeps_pinging(start_node: Any, tenant: str) -> None:
    # the node's PINGs (every 0.1 s here) must not keep wait() from noticing its deadline: a job
    # of 990 ms publishes nothing between RUNNING and its end (no progress under a second)
    node: Node = await start_node(auth=True, ws_ping_seconds=0.1)
    url, key = base_url(node), await new_tenant(node, tenant)

    def scenario() -> float:
        with Client(url, key) as client:
            job_id = client.submit("sleep", {"delayMs": 990})
            began = time.monotonic()
            with pytest.raises(WaitTimeout):
                client.wait(job_id, timeout=0.3)
            return time.monotonic() - began

    with trio.fail_after(30):
        waited = await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
    assert waited < 0.8, waited  # its deadline, not the job's end


async def _async_scenario(url: str, key: str, tenant: str) -> None:
    async with AsyncClient(url, key) as client:
        job_id = await client.submit("sleep", {"delayMs": 10})
        job = await client.wait(job_id, timeout=20)
        assert job.status == "COMPLETED" and job.tenant_id == tenant
        (a, b) = await client.submit_many([("sleep", {"delayMs": 0}), ("sleep", {"delayMs": 0})])
        assert {a, b, job_id} <= {j.id async for j in client.list(status="COMPLETED")} | {a, b}
        long = await client.submit("sleep", {"delayMs": 60_000})
        await client.cancel(long)
        assert (await client.wait(long, timeout=20)).status == "CANCELLED"
        assert (await client.retry(long)).status == "PENDING"
        await client.cancel(long)
        assert (await client.stats()).tenant_id == tenant
        with pytest.raises(NotFound):
            await client.get("00000000-0000-4000-8000-000000000000")
        with pytest.raises(Invalid):
            await client.submit("sleep", {"delayMs": -1})
        with pytest.raises(WaitTimeout):
            await client.wait(await client.submit("sleep", {"delayMs": 30_000}), timeout=0.5)
        # the feed: events of jobs submitted after subscribing, in order, each with its eventId
        seen: list[Any] = []
        async with client.events() as feed:
            first = await feed.__anext__()
            assert first.type == "SUBSCRIBED"
            watched = await client.submit("sleep", {"delayMs": 1})
            async for event in feed:
                if event.job_id == watched:
                    seen.append(event)
                if event.job_id == watched and event.status == "COMPLETED":
                    break
        assert [e.status for e in seen] == ["PENDING", "RUNNING", "COMPLETED"]
        assert all(e.event_id for e in seen)
        # schedules
        made = await client.put_schedule("tick", "sleep", {"delayMs": 0}, every="1s", priority=3)
        assert (made.every, made.cron, made.job["priority"], made.tenant_id) == ("1s", None, 3, tenant)
        for _ in range(100):  # its first fire is a second away
            fired_jobs = [j async for j in client.list() if j.schedule_name == "tick"]
            if fired_jobs:
                break
            await anyio.sleep(0.1)
        fired = fired_jobs[0]
        assert fired.priority == 3 and fired.scheduled_for is not None
        assert (await client.pause_schedule("tick")).paused
        assert (await client.resume_schedule("tick")).next_fire_at is not None
        assert [s.name for s in await client.list_schedules()] == ["tick"]
        await client.delete_schedule("tick")
        with pytest.raises(NotFound):
            await client.get_schedule("tick")
        with pytest.raises(Invalid):
            await client.put_schedule("bad", "sleep", {"delayMs": 0}, cron="not cron")
    async with AsyncClient(url, "cvk_nope") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.submit("sleep", {"delayMs": 1})
        with pytest.raises(ApiError):
            async with stranger.events() as feed:
                await feed.__anext__()


async def test_async_client_under_trio(served: tuple[str, str], tenant: str) -> None:
    url, key = served
    with trio.fail_after(60):
        await _async_scenario(url, key, tenant)


async def test_async_client_under_asyncio(served: tuple[str, str], tenant: str) -> None:
    url, key = served
    with trio.fail_after(60):
        await trio.to_thread.run_sync(lambda: asyncio.run(_async_scenario(url, key, tenant)))
