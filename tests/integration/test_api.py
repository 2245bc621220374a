"""The HTTP API through a real node (hypercorn on port 0) on real PostgreSQL and Redis."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from conveyor.node import Node
from tests.helpers import base_url, wait_until

SLEEP = {"type": "sleep", "payload": {"delayMs": 0}}


async def count_rows(node: Node, tenant: str) -> int:
    _, total, _ = await node.pg.list_jobs(tenant, None, 1, 0)
    return total


async def test_health_is_the_reference_shape(node: Node) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["timestamp"].endswith("Z")


async def test_readiness_reports_stores_and_actors(node: Node) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.get("/health/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["checks"]["postgres"]["ok"] and body["checks"]["redis"]["ok"]
    tree = body["supervisor"]
    assert tree["name"] == "node" and tree["restarts"] == 0
    names = {c["name"] for c in tree["children"]}
    assert names == {"writer-1", "writer-2", "pipeline", "maintenance", "http"}
    pipeline = next(c for c in tree["children"] if c["name"] == "pipeline")["supervisor"]
    assert [c["name"] for c in pipeline["children"]] == [
        "broadcaster", "recorder", "executors", "fetcher", "heartbeat",
    ]
    assert all(c["state"] == "running" for c in pipeline["children"])


async def test_readiness_is_503_when_redis_is_down(start_node: Any, private_redis: Any) -> None:
    node = await start_node(redis_url=private_redis.url)
    private_redis.stop()
    with trio.fail_after(15):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.get("/health/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["redis"]["ok"] is False
    assert r.json()["checks"]["postgres"]["ok"] is True


async def test_submit_get_and_list(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs", json={"tenantId": tenant, **SLEEP})
            assert r.status_code == 201
            job_id = r.json()["jobId"]
            job = (await client.get(f"/jobs/{job_id}")).json()
            assert job["id"] == job_id and job["tenantId"] == tenant and job["type"] == "sleep"
            assert set(job) >= {
                "id", "tenantId", "type", "payload", "status", "attempts", "error",
                "createdAt", "updatedAt", "result", "maxAttempts",
            }

            async def done() -> bool:
                return (await client.get(f"/jobs/{job_id}")).json()["status"] == "COMPLETED"

            await wait_until(done)
            job = (await client.get(f"/jobs/{job_id}")).json()
            assert job["attempts"] == 1 and job["result"] == {"sleptMs": 0}
            listed = (await client.get("/jobs", params={"tenantId": tenant})).json()
            assert listed["total"] == 1 and listed["jobs"][0]["id"] == job_id


async def test_list_filters_pages_and_orders_newest_first(node: Node, tenant: str) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            ids = []
            for i in range(5):
                r = await client.post(
                    "/jobs",
                    json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0},
                          "maxAttempts": 1 + i},
                )
                ids.append(r.json()["jobId"])
            bad = await client.post(
                "/jobs",
                json={"tenantId": tenant, "type": "data_processing",
                      "payload": {"records": [{"x": "a"}], "operation": "sum", "field": "x"}},
            )
            ids.append(bad.json()["jobId"])

            async def settled() -> bool:
                body = (await client.get("/jobs", params={"tenantId": tenant, "status": "COMPLETED"})).json()
                failed = (await client.get("/jobs", params={"tenantId": tenant, "status": "FAILED"})).json()
                return body["total"] == 5 and failed["total"] == 1

            await wait_until(settled)
            page = (await client.get("/jobs", params={"tenantId": tenant, "limit": 2, "offset": 1})).json()
            assert page["total"] == 6
            assert [j["id"] for j in page["jobs"]] == [ids[4], ids[3]]
            everything = (await client.get("/jobs", params={"tenantId": tenant})).json()
            assert [j["id"] for j in everything["jobs"]] == ids[::-1]
            failed = (await client.get("/jobs", params={"tenantId": tenant, "status": "FAILED"})).json()
            assert [j["id"] for j in failed["jobs"]] == [ids[5]]
            other = (await client.get("/jobs", params={"tenantId": tenant + "-other"})).json()
            assert other == {"jobs": [], "total": 0, "totalExact": True, "nextCursor": None}


async def test_a_list_leaves_out_large_payloads_and_results(node: Node, tenant: str) -> None:
    big = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0, "blob": "x" * 20_000}}
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            big_id = (await client.post("/jobs", json=big)).json()["jobId"]
            small_id = (await client.post("/jobs", json={"tenantId": tenant, **SLEEP})).json()["jobId"]
            listed = {j["id"]: j for j in (await client.get("/jobs", params={"tenantId": tenant})).json()["jobs"]}
            whole = (await client.get(f"/jobs/{big_id}")).json()
    assert listed[big_id]["payload"] is None and listed[big_id]["payloadOmitted"] is True
    assert "payloadOmitted" not in listed[small_id] and listed[small_id]["payload"] == SLEEP["payload"]
    assert whole["payload"]["blob"] == "x" * 20_000 and "payloadOmitted" not in whole


async def test_validation_errors_name_the_field_and_store_nothing(node: Node, tenant: str) -> None:
    cases: list[tuple[Any, str]] = [
        ({"type": "sleep", "payload": {"delayMs": 1}}, "tenantId"),
        ({"tenantId": "x" * 101, "type": "sleep", "payload": {"delayMs": 1}}, "tenantId"),
        ({"tenantId": tenant, "type": "fax", "payload": {}}, "type"),
        ({"tenantId": tenant, "type": "sleep", "payload": "x"}, "payload"),
        ({"tenantId": tenant, "type": "sleep", "payload": {"delayMs": "soon"}}, "payload.delayMs"),
        ({"tenantId": tenant, "type": "email", "payload": {"to": "x", "subject": "s", "body": "b"}}, "payload.to"),
        ({"tenantId": tenant, "type": "webhook", "payload": {"url": "file:///etc/passwd"}}, "payload.url"),
        ({"tenantId": tenant, "type": "data_processing", "payload": {"records": [], "operation": "x", "field": "f"}}, "payload.operation"),
        ({"tenantId": tenant, **SLEEP, "maxAttempts": 0}, "maxAttempts"),
        ({"tenantId": tenant, **SLEEP, "timeoutMs": -5}, "timeoutMs"),
    ]
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            for body, field in cases:
                r = await client.post("/jobs", json=body)
                assert r.status_code == 400, (body, r.text)
                out = r.json()
                assert out["error"] == "Validation failed"
                assert field in [d["field"] for d in out["details"]], (body, out)
            r = await client.post("/jobs", content=b'{"tenantId": ', headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"] == "Malformed JSON"
            deep = b"[" * 100_000 + b"]" * 100_000
            r = await client.post("/jobs", content=deep)
            assert r.status_code == 400
            r = await client.post("/jobs", content=b'{"a":"' + b"x" * (1024 * 1024) + b'"}')
            assert r.status_code == 413 and "too large" in r.json()["error"]
            r = await client.get("/jobs")
            assert r.status_code == 400 and r.json()["details"][0]["field"] == "tenantId"
            r = await client.get("/jobs", params={"tenantId": tenant, "limit": 500})
            assert r.status_code == 400 and r.json()["details"][0]["field"] == "limit"
    assert await count_rows(node, tenant) == 0


async def test_batch_submit_is_all_or_nothing(node: Node, tenant: str) -> None:
    good = {"tenantId": tenant, **SLEEP}
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs/batch", json={"jobs": [good, good, {**good, "type": "fax"}]})
            assert r.status_code == 400
            assert r.json()["details"][0]["field"] == "jobs[2].type"
            assert await count_rows(node, tenant) == 0
            r = await client.post("/jobs/batch", json={"jobs": [good] * 1001})
            assert r.status_code == 400 and r.json()["details"][0]["field"] == "jobs"
            r = await client.post("/jobs/batch", json={"jobs": []})
            assert r.status_code == 400
            r = await client.post("/jobs/batch", json={"jobs": [good] * 1000})
            assert r.status_code == 201
            ids = r.json()["jobIds"]
            assert len(set(ids)) == 1000
    assert await count_rows(node, tenant) == 1000


async def test_unknown_job_and_route_are_json_404(node: Node) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            for path in ("/jobs/00000000-0000-0000-0000-000000000000", "/jobs/not-a-uuid", "/nope"):
                r = await client.get(path)
                assert r.status_code == 404
                assert "error" in r.json()
            r = await client.delete("/health")
            assert r.status_code == 405 and "error" in r.json()


async def test_cors_as_the_reference(node: Node, tenant: str) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.get("/health", headers={"Origin": "http://dash.example"})
            assert r.headers["access-control-allow-origin"] == "*"
            r = await client.options(
                "/jobs",
                headers={
                    "Origin": "http://dash.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type",
                },
            )
            assert r.status_code == 204
            assert r.headers["access-control-allow-origin"] == "*"
            assert "POST" in r.headers["access-control-allow-methods"]
            assert r.headers["access-control-allow-headers"] == "content-type"
            r = await client.post("/jobs", content=json.dumps({"tenantId": tenant, **SLEEP}))
            assert r.headers["access-control-allow-origin"] == "*"


async def test_metrics_count_what_the_node_did(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            ok = {"tenantId": tenant, **SLEEP}
            bad = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 5000}, "timeoutMs": 10,
                   "maxAttempts": 1}
            assert (await client.post("/jobs/batch", json={"jobs": [ok, ok, bad]})).status_code == 201

            async def settled() -> bool:
                return node.metrics.value("conveyor_jobs_finished_total", outcome="failed") == 1 and \
                    node.metrics.value("conveyor_jobs_finished_total", outcome="completed") == 2

            await wait_until(settled)
            r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = set(r.text.splitlines())
    assert "conveyor_jobs_submitted_total 3" in lines
    assert "conveyor_jobs_started_total 3" in lines
    assert 'conveyor_jobs_finished_total{outcome="completed"} 2' in lines
    assert 'conveyor_jobs_finished_total{outcome="failed"} 1' in lines
    assert 'conveyor_supervisor_restarts_total{supervisor="pipeline"} 0' in lines
    assert "conveyor_executors 8" in lines
    assert "# TYPE conveyor_jobs_finished_total counter" in lines
    # how long attempts ran, per job type: the two that completed and the one that timed out
    assert "# TYPE conveyor_job_run_seconds histogram" in lines
    assert 'conveyor_job_run_seconds_count{type="sleep"} 3' in lines
    assert 'conveyor_job_run_seconds_bucket{type="sleep",le="+Inf"} 3' in lines
    # how long they waited ready before a claim: three claims, none of them 5 minutes
    assert "# TYPE conveyor_job_queue_wait_seconds histogram" in lines
    assert 'conveyor_job_queue_wait_seconds_count{type="sleep"} 3' in lines
    assert 'conveyor_job_queue_wait_seconds_bucket{type="sleep",le="300"} 3' in lines
    gauges = {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if not line.startswith("#")}
    assert gauges["process_resident_memory_bytes"] > 10_000_000  # in bytes, printed whole
    assert gauges["process_open_fds"] > 3 and gauges["conveyor_trio_tasks"] > 10


async def test_each_request_has_an_access_log_line_unless_switched_off(
    start_node: Any, tenant: str, caplog: Any
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="conveyor.access")
    on, off = await start_node(access_log=True), await start_node(access_log=False)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(off)) as client:
            assert (await client.get("/off-node-marker")).status_code == 404
        async with httpx.AsyncClient(base_url=base_url(on)) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.post("/jobs", json={"tenantId": tenant, "type": "fax", "payload": {}})).status_code == 400
            # as sent, percent-encoded: a client cannot start a line of its own in the log
            assert (await client.get("/jobs/%0A127.0.0.1:1%20%22GET%20/forged")).status_code == 404
        # a line is written once the request is over, just after its answer; the off node's
        # request was over before the on node's were made
        await wait_until(lambda: any("%0A127" in line for line in _access_lines(caplog)))
    lines = _access_lines(caplog)
    assert not any("off-node-marker" in line for line in lines), lines
    assert any('"GET /health HTTP/1.1" 200 ' in line and line.endswith("ms") for line in lines), lines
    assert any('"POST /jobs HTTP/1.1" 400 ' in line for line in lines), lines
    assert any('"GET /jobs/%0A127.0.0.1:1%20%22GET%20/forged HTTP/1.1" 404 ' in line for line in lines), lines
    assert not any("\n" in line for line in lines), lines


def _access_lines(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "conveyor.access"]


async def test_queue_wait_is_the_time_a_job_waited_ready(start_node: Any, tenant: str) -> None:
    # one executor: the second job waits for the first one's 400 ms
    node: Node = await start_node(concurrency=1)
    first = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 400}}
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            assert (await client.post("/jobs/batch", json={"jobs": [first, {**first, "payload": {"delayMs": 0}}]})).status_code == 201
            await wait_until(lambda: node.metrics.value("conveyor_jobs_finished_total", outcome="completed") == 2)
    (wait,) = [h for (name, _), h in node.metrics.histograms.items() if name == "conveyor_job_queue_wait_seconds"]
    assert wait.count == 2 and 0.35 < wait.sum < 5, wait.sum
    assert wait.counts[wait.bounds.index(0.25)] == 1  # the first was claimed at once, the second was not


async def test_history_counts_each_end_once_and_the_depth(start_node: Any, tenant: str) -> None:
    node: Node = await start_node()
    ok = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 1}}
    bad = {"tenantId": tenant, "type": "data_processing", "maxAttempts": 1,
           "payload": {"records": [{"v": "x"}], "operation": "sum", "field": "v"}}
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            assert (await client.post("/jobs/batch", json={"jobs": [ok] * 30 + [bad] * 2})).status_code == 201

            async def ended() -> Any:
                r = await client.get("/stats/history", params={"tenantId": tenant})
                assert r.status_code == 200
                body = r.json()
                return body if (sum(body["completed"]), sum(body["failed"])) == (30, 2) else None

            await wait_until(ended)
            body = await ended()
            other = (await client.get("/stats/history", params={"tenantId": f"{tenant}-other"})).json()
    assert body["tenantId"] == tenant and body["slotSeconds"] == 5 and len(body["completed"]) == 720
    assert max(u for u in body["unfinished"] if u is not None) == 32  # the most in a slot: all 32
    assert all(r is None or r <= 32 for r in body["running"])
    assert sum(other["completed"]) == 0 and set(other["unfinished"]) == {None}  # one tenant's own
