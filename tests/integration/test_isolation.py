"""Tenant isolation: tenant A, holding B's job ids and naming B wherever a request can name a
tenant, gets 403 or 404 and learns nothing of B: zero rows, zero events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from conveyor.node import Node
from tests.helpers import ADMIN_KEY, base_url, bearer, new_tenant, wait_until
from tests.integration.test_websocket import next_message, ws_url

SLEEP = {"type": "sleep", "payload": {"delayMs": 0}}


async def test_a_tenant_cannot_see_or_touch_another_tenants_jobs(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY)
    key_a, key_b = await new_tenant(node, "tenant-a"), await new_tenant(node, "tenant-b")
    a, b = bearer(key_a), bearer(key_b)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            b_ids = (await client.post("/jobs/batch", json={"jobs": [SLEEP] * 3}, headers=b)).json()["jobIds"]
            a_id = (await client.post("/jobs", json=SLEEP, headers=a)).json()["jobId"]

            # B's jobs are answered exactly as jobs that do not exist
            missing = await client.get(f"/jobs/{uuid.uuid4()}", headers=a)
            for job_id in b_ids:
                r = await client.get(f"/jobs/{job_id}", headers=a)
                assert (r.status_code, r.json()) == (404, missing.json()) == (404, {"error": "Job not found"})
                assert (await client.get(f"/jobs/{job_id}", headers=b)).status_code == 200
            # and so are their events (read from the caller's own event index, then the row)
            for job_id in b_ids:
                await wait_until(lambda job_id=job_id: _has_events(client, job_id, b))
                r = await client.get(f"/jobs/{job_id}/events", headers=a)
                assert (r.status_code, r.json()) == (404, {"error": "Job not found"}), r.text
            assert (await client.get(f"/jobs/{uuid.uuid4()}/events", headers=a)).status_code == 404
            own = (await client.get(f"/jobs/{a_id}/events", headers=a)).json()
            assert own["jobId"] == a_id and own["events"] and {e["jobId"] for e in own["events"]} == {a_id}

            # naming B in a query or a body is forbidden, and stores nothing
            for query in ("tenantId=tenant-b", "tenantId=tenant-b&status=PENDING", "tenantId="):
                r = await client.get(f"/jobs?{query}", headers=a)
                assert r.status_code == 403 and "not the tenant of this API key" in r.json()["error"]
            forged = {**SLEEP, "tenantId": "tenant-b"}
            assert (await client.post("/jobs", json=forged, headers=a)).status_code == 403
            mixed = {"jobs": [SLEEP, {**SLEEP, "tenantId": "tenant-a"}, forged]}
            r = await client.post("/jobs/batch", json=mixed, headers=a)
            assert r.status_code == 403 and "jobs[2].tenantId" in r.json()["error"]

            # A's own list holds A's jobs only (tenantId may be left out, or be A's own)
            for query in ("", "?tenantId=tenant-a"):
                listed = (await client.get(f"/jobs{query}", headers=a)).json()
                assert [j["id"] for j in listed["jobs"]] == [a_id] and listed["total"] == 1
                assert "tenant-b" not in json.dumps(listed)
            listed_b = (await client.get("/jobs", headers=b)).json()
            assert sorted(j["id"] for j in listed_b["jobs"]) == sorted(b_ids)


async def _has_events(client: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> bool:
    r = await client.get(f"/jobs/{job_id}/events", headers=headers)
    return r.status_code == 200 and bool(r.json()["events"])


async def test_a_tenant_cannot_subscribe_to_another_tenants_events(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY)
    key_a, key_b = await new_tenant(node, "tenant-a"), await new_tenant(node, "tenant-b")
    seen_by_a: list[dict[str, Any]] = []
    with trio.fail_after(30):
        async with (
            open_websocket_url(ws_url(node), extra_headers=[(b"authorization", f"Bearer {key_a}".encode())]) as ws_a,
            open_websocket_url(ws_url(node), extra_headers=[(b"authorization", f"Bearer {key_b}".encode())]) as ws_b,
        ):
            for ws in (ws_a, ws_b):
                assert (await next_message(ws))["type"] == "CONNECTED"
            for forged in ({"type": "SUBSCRIBE", "tenantId": "tenant-b"},
                           {"type": "UNSUBSCRIBE", "tenantId": "tenant-b"}):
                await ws_a.send_message(json.dumps(forged))
                reply = await next_message(ws_a)
                assert reply["type"] == "ERROR" and "forbidden" in reply["error"]
            await ws_a.send_message(json.dumps({"type": "SUBSCRIBE"}))
            assert (await next_message(ws_a))["type"] == "SUBSCRIBED"
            await ws_b.send_message(json.dumps({"type": "SUBSCRIBE"}))
            assert (await next_message(ws_b))["type"] == "SUBSCRIBED"

            async with httpx.AsyncClient(base_url=base_url(node)) as client:
                b_ids = (await client.post("/jobs/batch", json={"jobs": [SLEEP] * 5}, headers=bearer(key_b))).json()["jobIds"]
                done_b: set[str] = set()
                while len(done_b) < 5:  # B hears all of its own
                    msg = await next_message(ws_b)
                    if msg.get("status") == "COMPLETED":
                        done_b.add(msg["jobId"])
                assert done_b == set(b_ids)
                # then A's own job: everything A's socket got until its completion is A's
                a_id = (await client.post("/jobs", json=SLEEP, headers=bearer(key_a))).json()["jobId"]
                while True:
                    msg = await next_message(ws_a)
                    seen_by_a.append(msg)
                    if msg.get("jobId") == a_id and msg["status"] == "COMPLETED":
                        break
    assert {m["tenantId"] for m in seen_by_a} == {"tenant-a"}
    assert not {m["jobId"] for m in seen_by_a} & set(b_ids)


async def test_without_auth_the_reference_protocol_is_unchanged(
    start_node: Any, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    # auth off (loopback only): tenantId is required and names the tenant, as in the reference
    node: Node = await start_node(auth=False)
    assert any("auth is OFF" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs", json=SLEEP)
            assert r.status_code == 400 and r.json()["details"][0]["field"] == "tenantId"
            job_id = (await client.post("/jobs", json={**SLEEP, "tenantId": tenant})).json()["jobId"]
            assert (await client.get(f"/jobs/{job_id}")).json()["tenantId"] == tenant
            assert (await client.get("/jobs")).status_code == 400
            assert (await client.post("/ws/tickets")).status_code == 404

            async def listed() -> bool:
                return (await client.get(f"/jobs?tenantId={tenant}")).json()["total"] == 1

            await wait_until(listed)
