"""What the dashboard reads besides the job API: its files, job types, queue depth, a job's
events, and GET /jobs filtered by type — each for the caller's tenant only."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.helpers import base_url, bearer, new_tenant, wait_until


async def test_dashboard_files_and_reads(start_node: Any, tenant: str) -> None:
    node = await start_node(auth=True, concurrency=1)
    key = await new_tenant(node, tenant)
    other = await new_tenant(node, tenant + "-other")
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node), headers=bearer(key)) as client:
            page = await client.get("/", headers={})  # the page itself needs no key
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert '<script src="/dashboard/app.js">' in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"), ("charts.js", "text/javascript")):
                r = await client.get(f"/dashboard/{name}", headers={})
                assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and r.content
            assert (await client.get("/dashboard/secrets.txt")).json() == {"error": "Not found"}

            assert (await client.get("/job-types")).json() == {"types": node.registry.names()}
            assert (await client.get("/job-types", headers={"Authorization": ""})).status_code == 401

            # queue depth: a long job running, two waiting behind it (one executor)
            ids = []
            for delay in (5000, 0, 0):
                r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": delay}})
                ids.append(r.json()["jobId"])
            await wait_until(lambda: node.pool.running_count() == 1)
            stats = (await client.get("/stats")).json()
            assert stats == {"tenantId": tenant, "unfinished": 3, "running": 1, "waiting": 2}
            assert (await client.get(f"/stats?tenantId={tenant}-other")).status_code == 403
            r = await client.post("/jobs", json={"type": "email", "payload": {"to": "a@b.co", "subject": "s", "body": "b"}})
            email = r.json()["jobId"]

            # GET /jobs?type=
            r = await client.get("/jobs?type=email")
            assert [j["id"] for j in r.json()["jobs"]] == [email] and r.json()["total"] == 1
            r = await client.get("/jobs?type=sleep&limit=100")
            assert {j["id"] for j in r.json()["jobs"]} == set(ids)
            assert (await client.get("/jobs?type=" + "x" * 101)).status_code == 400

            # a job's events, oldest first, each with its feed id
            await client.post(f"/jobs/{ids[0]}/cancel")

            async def cancelled() -> bool:
                return (await client.get(f"/jobs/{ids[0]}")).json()["status"] == "CANCELLED"

            await wait_until(cancelled)
            body = (await client.get(f"/jobs/{ids[0]}/events")).json()
            assert body["jobId"] == ids[0]
            assert [e["status"] for e in body["events"] if e["type"] == "JOB_UPDATE"] == ["PENDING", "RUNNING", "CANCELLED"]
            assert all(e["jobId"] == ids[0] and e["eventId"] for e in body["events"])
            # another tenant's job is as absent as a job that does not exist
            r = await client.get(f"/jobs/{ids[0]}/events", headers=bearer(other))
            assert r.status_code == 404 and r.json() == {"error": "Job not found"}
