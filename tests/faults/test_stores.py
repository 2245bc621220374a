"""Faults of the stores under real nodes: Redis lost, Redis down for a minute, PostgreSQL cut
off, a job dispatched twice, and one submission repeated ten times at once."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import trio

from conveyor.model import NewJob
from conveyor.stores import PostgresStore, RedisStore
from tests.faults.conftest import Cluster, submit_ledger
from tests.helpers import dispatch, wait_until
from tests.tcp_proxy import TcpProxy


async def test_redis_killed_and_restarted_empty_mid_run(
    make_cluster: Callable[..., Cluster], private_redis: Any, tenant: str
) -> None:
    cluster = make_cluster(redis_url=private_redis.url)
    nodes = [await cluster.start(f"n{i}", CONVEYOR_CONCURRENCY=20) for i in range(2)]
    with trio.fail_after(90):
        ids = await submit_ledger(nodes[0].url, tenant, 300, ms=300)
        await wait_until(lambda: len(cluster.starts()) >= 60, interval=0.05)
        private_redis.stop()  # every queue, lease and envelope is gone
        private_redis.start()
        statuses = await cluster.wait_terminal(tenant, 300)
    assert set(statuses) == set(ids)
    assert Counter(statuses.values()) == {"COMPLETED": 300}  # none lost
    assert {job for job, _ in cluster.starts()} == set(ids)


async def test_redis_down_for_a_minute(
    make_cluster: Callable[..., Cluster], private_redis: Any, tenant: str
) -> None:
    cluster = make_cluster(redis_url=private_redis.url)
    node = await cluster.start("n0", CONVEYOR_CONCURRENCY=10)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        with trio.fail_after(150):
            before = await submit_ledger(node.url, tenant, 5, ms=0)
            await cluster.wait_terminal(tenant, 5)
            private_redis.stop()
            down_at = trio.current_time()
            during: list[str] = []
            while trio.current_time() - down_at < 60:  # longer than any blocking timeout
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 0}})
                assert r.status_code == 201, r.text  # submissions keep working
                during.append(r.json()["jobId"])
                ready = await client.get("/health/ready")
                assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
                await trio.sleep(5)
            private_redis.start()
            back_at = trio.current_time()
            await wait_until(lambda: any(job in during for job, _ in cluster.starts()), interval=0.1)
            resumed_after = trio.current_time() - back_at
            statuses = await cluster.wait_terminal(tenant, 5 + len(during))
            assert (await client.get("/health/ready")).status_code == 200
    assert resumed_after < 10, resumed_after
    assert set(statuses) == set(before) | set(during)
    assert set(statuses.values()) == {"COMPLETED"}
    assert cluster.duplicates() == 0


async def test_postgres_cut_off_mid_run(
    make_cluster: Callable[..., Cluster], database_url: str, tenant: str, nursery: trio.Nursery
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = TcpProxy(int(info.get("port") or 5432))
    await proxy.start(nursery)
    cluster = make_cluster(database_url=f"postgresql://postgres@127.0.0.1:{proxy.port}/{info['dbname']}")
    node = await cluster.start("n0", CONVEYOR_CONCURRENCY=10)
    accepted: list[str] = []
    refused = 0
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:

        async def post() -> httpx.Response:
            started = trio.current_time()
            r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 100}})
            assert trio.current_time() - started < 2.5, "an answer within 2 s, even while cut off"
            return r

        with trio.fail_after(90):
            for _ in range(5):
                r = await post()
                assert r.status_code == 201
                accepted.append(r.json()["jobId"])
            proxy.cut()
            for _ in range(5):
                r = await post()
                assert r.status_code in (201, 503), r.text
                if r.status_code == 201:  # possible only if it committed before the cut
                    accepted.append(r.json()["jobId"])
                else:
                    refused += 1
                    assert r.json()["error"].startswith(("Storage unavailable", "Timed out"))
            await proxy.start(nursery)

            async def recovered() -> bool:
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 0}})
                if r.status_code == 201:
                    accepted.append(r.json()["jobId"])
                return r.status_code == 201

            await wait_until(recovered, interval=0.5)
            statuses = await cluster.wait_terminal(tenant, len(accepted))
    assert refused >= 4
    assert set(statuses) == set(accepted)  # every 201 has its row, and nothing else was stored
    assert set(statuses.values()) == {"COMPLETED"}


async def test_a_job_dispatched_twice_runs_once(
    cluster: Cluster, database_url: str, tenant: str
) -> None:
    jobs = [NewJob(str(uuid.uuid4()), tenant, "ledger", {"ms": 50}, 3, 5000) for _ in range(50)]
    pg = PostgresStore(database_url, pool_size=1)
    await pg.open()
    redis = RedisStore(cluster.config.redis_url, prefix=cluster.config.redis_prefix, pool_size=1)
    try:
        with trio.fail_after(60):
            await pg.insert_jobs([(None, jobs)])
            assert await dispatch(redis, jobs) == 50
            assert await dispatch(redis, jobs) == 0  # the second dispatch is refused outright
            # and ids put into the ready queue again behind the script's back (with scores after
            # their own, as once more) are skipped once their job has run
            queue = redis.tkey(tenant, "ready", tenant)
            again = {j.id: 2**52 + n for n, j in enumerate(jobs)}
            await trio.to_thread.run_sync(lambda: redis.client.zadd(queue, again))
            nodes = [await cluster.start(f"n{i}", CONVEYOR_CONCURRENCY=10) for i in range(2)]
            statuses = await cluster.wait_terminal(tenant, 50)
            assert nodes
    finally:
        await pg.close()
        await redis.close()
    assert set(statuses.values()) == {"COMPLETED"}
    assert cluster.duplicates() == 0 and len(cluster.starts()) == 50


async def test_one_idempotency_key_ten_times_at_once(cluster: Cluster, tenant: str) -> None:
    nodes = [await cluster.start(f"n{i}") for i in range(2)]
    job = {"tenantId": tenant, "type": "ledger", "payload": {"ms": 0}}
    answers: list[httpx.Response] = []
    with trio.fail_after(30):
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(i: int) -> None:
                answers.append(await client.post(
                    f"{nodes[i % 2].url}/jobs", json=job, headers={"Idempotency-Key": "order-42"}))

            async with trio.open_nursery() as requests:
                for i in range(10):
                    requests.start_soon(post, i)
            other = await client.post(
                f"{nodes[0].url}/jobs", json={**job, "payload": {"ms": 1}},
                headers={"Idempotency-Key": "order-42"},
            )
            statuses = await cluster.wait_terminal(tenant, 1)
    assert [a.status_code for a in answers] == [201] * 10
    assert len({a.text for a in answers}) == 1  # ten identical answers
    assert list(statuses) == [answers[0].json()["jobId"]]  # one job
    assert other.status_code == 422  # the same key for another request is refused
    assert cluster.duplicates() == 0
