"""Fair share and limits: per-tenant running caps across nodes, submit rate limits and queue
quotas shared by all nodes (429 with Retry-After), and the per-tenant WebSocket cap."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from conveyor.model import NewJob
from conveyor.node import Node
from conveyor.stores import RedisStore
from conveyor.stores.redis import Applied
from tests.conftest import REDIS_URL, SHARDS
from tests.helpers import ADMIN_KEY, base_url, bearer, dispatch, new_tenant, wait_until
from tests.integration import probe_handlers
from tests.integration.test_websocket import next_message, ws_url

PROBES = ("tests.integration.probe_handlers",)


def probe(ms: int) -> dict[str, Any]:
    return {"type": "probe", "payload": {"ms": ms}}


@pytest.fixture
async def redis_store(redis_prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(REDIS_URL, prefix=redis_prefix, pool_size=2, shards=SHARDS)
    yield store
    await store.close()


def jobs_of(tenant: str, n: int) -> list[NewJob]:
    return [NewJob(str(uuid.uuid4()), tenant, "sleep", {"delayMs": 0}, 3, 1000) for _ in range(n)]


async def test_claims_pass_over_a_tenant_at_its_running_cap(redis_store: RedisStore) -> None:
    redis = redis_store
    with trio.fail_after(10):
        await dispatch(redis, jobs_of("a", 50) + jobs_of("b", 3) + jobs_of("c", 50))
        await redis.set_running_caps({"a": 2})  # a's own cap; the default (ARGV) caps c at 4
        first = await redis.claim(20, node="n1", lease_ms=60_000, max_running=4)
        counts = {t: sum(j.tenant_id == t for j in first) for t in "abc"}
        assert counts == {"a": 2, "b": 3, "c": 4}
        # every tenant is at its cap or out of work: another node gets nothing
        assert await redis.claim(20, node="n2", lease_ms=60_000, max_running=4) == []
        # a finished job of a frees one slot of a, on any node
        done = next(j for j in first if j.tenant_id == "a")
        await redis.finish([Applied(done.tenant_id, done.id, done.attempt, "done")])
        again = await redis.claim(20, node="n2", lease_ms=60_000, max_running=4)
        assert [j.tenant_id for j in again] == ["a"]
        # a job of a handed back, retried or reaped frees its slot too
        retried = next(j for j in first if j.tenant_id == "c")
        await redis.finish([Applied(retried.tenant_id, retried.id, retried.attempt, "retry", 60_000)])
        assert [j.tenant_id for j in await redis.claim(20, node="n2", lease_ms=60_000, max_running=4)] == ["c"]
        assert await redis.queued("a") == 49 and await redis.queued("b") == 3


async def test_a_flooding_tenant_is_capped_across_two_nodes(start_node: Any) -> None:
    probe_handlers.reset()
    nodes: list[Node] = [
        await start_node(auth=True, admin_key=ADMIN_KEY, concurrency=4, handler_modules=PROBES)
        for _ in range(2)
    ]
    key_a = await new_tenant(nodes[0], "flood", maxRunning=3)
    key_b = await new_tenant(nodes[0], "small")
    for node in nodes[1:]:
        await wait_until(lambda node=node: node.limits.of("flood").max_running == 3)
    with trio.fail_after(60):
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(10):  # 10,000 jobs of 3 s each, through both nodes
                r = await client.post(
                    f"{base_url(nodes[i % 2])}/jobs/batch", json={"jobs": [probe(3000)] * 1000},
                    headers=bearer(key_a),
                )
                assert r.status_code == 201, r.text
            await wait_until(lambda: probe_handlers.RUNNING["flood"] == 3)
            submitted = trio.current_time()
            r = await client.post(
                f"{base_url(nodes[1])}/jobs/batch", json={"jobs": [probe(500)] * 5}, headers=bearer(key_b)
            )
            assert r.status_code == 201
            await wait_until(lambda: probe_handlers.RUNNING["small"] == 5)
            waited = trio.current_time() - submitted
            # the flood keeps flowing, three at a time
            await wait_until(lambda: sum(t == "flood" for t, _ in probe_handlers.STARTED) >= 6)
    # B did not wait for a flood job to end (3 s; without the cap the flood would hold all
    # eight executors): its five started together, within a claim round
    assert waited < 1.5, waited
    assert probe_handlers.PEAK["flood"] == 3  # never more than its cap, over both nodes
    assert probe_handlers.PEAK["small"] == 5  # the free executors went to B


async def test_submit_rate_limit_is_shared_by_all_nodes(start_node: Any) -> None:
    nodes: list[Node] = [await start_node(auth=True, admin_key=ADMIN_KEY) for _ in range(2)]
    key = await new_tenant(nodes[0], "limited", submitRate=1, submitBurst=10)
    await new_tenant(nodes[0], "bystander")
    for node in nodes:
        await wait_until(lambda node=node: node.limits.of("limited").submit_burst == 10)
    sleep = {"type": "sleep", "payload": {"delayMs": 0}}
    with trio.fail_after(20):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{base_url(nodes[0])}/jobs/batch", json={"jobs": [sleep] * 10}, headers=bearer(key))
            assert r.status_code == 201  # the whole burst
            refused = await client.post(f"{base_url(nodes[1])}/jobs", json=sleep, headers=bearer(key))
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert "submit rate of 1 jobs/s" in refused.json()["error"]
            too_big = await client.post(f"{base_url(nodes[1])}/jobs/batch", json={"jobs": [sleep] * 11}, headers=bearer(key))
            assert too_big.status_code == 429 and "Retry-After" not in too_big.headers
            assert "split it" in too_big.json()["error"]
            await trio.sleep(int(refused.headers["Retry-After"]) + 0.1)
            assert (await client.post(f"{base_url(nodes[1])}/jobs", json=sleep, headers=bearer(key))).status_code == 201
            _, total, _ = await nodes[0].pg.list_jobs("limited", None, 100, 0)
            assert total == 11  # refused submissions stored nothing
    assert nodes[1].metrics.value("conveyor_submissions_limited_total", reason="rate") == 1
    assert nodes[1].metrics.value("conveyor_submissions_limited_total", reason="burst") == 1


async def test_queue_quota_is_shared_by_all_nodes(start_node: Any) -> None:
    nodes: list[Node] = [
        await start_node(auth=True, admin_key=ADMIN_KEY, concurrency=1) for _ in range(2)
    ]
    key = await new_tenant(nodes[0], "quota", maxQueued=20, maxRunning=1)
    for node in nodes:
        await wait_until(lambda node=node: node.limits.of("quota").max_queued == 20)
    slow = {"type": "sleep", "payload": {"delayMs": 20_000}}
    with trio.fail_after(20):
        async with httpx.AsyncClient() as client:
            async def post(node: Node, n: int) -> httpx.Response:
                return await client.post(
                    f"{base_url(node)}/jobs/batch", json={"jobs": [slow] * n}, headers=bearer(key)
                )

            assert (await post(nodes[0], 15)).status_code == 201
            refused = await post(nodes[1], 10)
            assert refused.status_code == 429 and "limit 20" in refused.json()["error"]
            assert int(refused.headers["Retry-After"]) >= 1
            assert (await post(nodes[1], 5)).status_code == 201
            assert (await post(nodes[0], 1)).status_code == 429
            _, total, _ = await nodes[0].pg.list_jobs("quota", None, 100, 0)
            assert total == 20


async def test_websocket_cap_per_tenant(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY)
    key = await new_tenant(node, "sockets", maxWebsockets=2)
    header = [(b"authorization", f"Bearer {key}".encode())]
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(node), extra_headers=header) as first:
            assert (await next_message(first))["type"] == "CONNECTED"
            async with open_websocket_url(ws_url(node)) as second:  # by AUTH message
                await second.send_message(json.dumps({"type": "AUTH", "apiKey": key}))
                assert (await next_message(second))["type"] == "CONNECTED"
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(ws_url(node), extra_headers=header):
                        pass
                assert rejected.value.status_code == 429
                async with open_websocket_url(ws_url(node)) as third:
                    await third.send_message(json.dumps({"type": "AUTH", "apiKey": key}))
                    with pytest.raises(ConnectionClosed) as closed:
                        await third.get_message()
                    assert closed.value.reason.code == 1013
        # the first two closed: room again
        await wait_until(lambda: node.hub.open_for("sockets") == 0)
        async with open_websocket_url(ws_url(node), extra_headers=header) as again:
            assert (await next_message(again))["type"] == "CONNECTED"


async def test_read_rate_per_tenant_with_list_pages_counted_by_size(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY)
    key = await new_tenant(node, "reader", readRate=1, readBurst=10)
    other = await new_tenant(node, "bystander")
    await wait_until(lambda: node.limits.of("reader").read_burst == 10)
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = (await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}},
                                        headers=bearer(key))).json()["jobId"]
            assert (await client.get("/jobs?limit=100", headers=bearer(key))).status_code == 200  # 5 of 10
            for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/events", "/stats", "/jobs?limit=20", "/jobs"):
                assert (await client.get(path, headers=bearer(key))).status_code == 200, path
            refused = await client.get(f"/jobs/{job_id}", headers=bearer(key))
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
            assert "read rate of 1 requests/s" in refused.json()["error"]
            # another tenant reads on, and writes were never counted
            assert (await client.get("/jobs", headers=bearer(other))).status_code == 200
            r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}}, headers=bearer(key))
            assert r.status_code == 201
    assert node.metrics.value("conveyor_reads_limited_total") == 1


async def test_queue_quota_in_bytes(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY, concurrency=1)
    key = await new_tenant(node, "bytes", maxQueuedBytes=50_000, maxRunning=1)
    await wait_until(lambda: node.limits.of("bytes").max_queued_bytes == 50_000)

    def job(size: int) -> dict[str, Any]:
        return {"type": "sleep", "payload": {"delayMs": 20_000, "blob": "x" * size}}

    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            assert (await client.post("/jobs/batch", json={"jobs": [job(10_000)] * 4}, headers=bearer(key))).status_code == 201
            refused = await client.post("/jobs", json=job(20_000), headers=bearer(key))
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
            assert "bytes of payload (limit 50000)" in refused.json()["error"]
            never = await client.post("/jobs", json=job(60_000), headers=bearer(key))
            assert never.status_code == 429 and "Retry-After" not in never.headers
            assert (await client.post("/jobs", json=job(5_000), headers=bearer(key))).status_code == 201
            # cancelling gives the bytes back
            listed = (await client.get("/jobs", headers=bearer(key))).json()["jobs"]
            for queued in listed:
                await client.post(f"/jobs/{queued['id']}/cancel", headers=bearer(key))
            async def released() -> bool:
                key = node.redis.tkey("bytes", "qbytes")
                return await trio.to_thread.run_sync(node.redis.client.hget, key, "bytes") == "0"

            await wait_until(released, interval=0.05)
            assert (await client.post("/jobs", json=job(20_000), headers=bearer(key))).status_code == 201
