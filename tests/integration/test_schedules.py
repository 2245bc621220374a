"""Recurring schedules through real nodes: one job per fire however many nodes run, none after
DELETE, pause and resume, the API's answers, tenant isolation and the per-tenant cap."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import trio

from conveyor.node import Node
from tests.helpers import ADMIN_KEY, base_url, bearer, new_tenant, wait_until

JOB = {"type": "sleep", "payload": {"delayMs": 0}}


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def scheduled(client: httpx.AsyncClient, tenant: str, name: str) -> list[dict[str, Any]]:
    """The jobs the schedule made, oldest fire first."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"tenantId": tenant, "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/jobs", params=params)).json()
        jobs += [j for j in page["jobs"] if j["scheduleName"] == name]
        cursor = page["nextCursor"]
        if cursor is None:
            return sorted(jobs, key=lambda j: j["scheduledFor"])


async def test_every_second_on_two_nodes_makes_one_job_per_fire_and_none_after_delete(
    start_node: Any, tenant: str
) -> None:
    nodes = [await start_node(), await start_node()]
    with trio.fail_after(40):
        async with httpx.AsyncClient(base_url=base_url(nodes[0])) as client:
            r = await client.put("/schedules/tick", json={"tenantId": tenant, "every": "1s", "job": JOB})
            assert r.status_code == 201, r.text
            made = r.json()
            assert made["every"] == "1s" and made["cron"] is None and made["timezone"] == "UTC"
            assert made["lastFireAt"] is None and made["nextFireAt"] is not None and not made["paused"]
            await wait_until(lambda: _count_at_least(client, tenant, "tick", 5), interval=0.1)
            r = await client.delete("/schedules/tick", params={"tenantId": tenant})
            assert r.status_code == 204 and r.content == b""
            deleted_at = (await client.get("/health")).json()["timestamp"]
            jobs = await scheduled(client, tenant, "tick")
            await trio.sleep(2.5)
            after = await scheduled(client, tenant, "tick")
            assert [j["id"] for j in after] == [j["id"] for j in jobs]  # none after DELETE
            fires = [parse(j["scheduledFor"]) for j in jobs]
            assert len(fires) == len(set(fires)) >= 5  # one job per fire
            assert all(b - a == timedelta(seconds=1) for a, b in zip(fires, fires[1:], strict=False))  # no gap
            assert fires[0] == parse(made["nextFireAt"])
            assert max(fires) <= parse(deleted_at)
            for job in jobs:
                assert parse(job["createdAt"]) >= parse(job["scheduledFor"])
            await wait_until(lambda: _all_completed(client, [j["id"] for j in jobs]))
            assert (await client.get("/schedules/tick", params={"tenantId": tenant})).status_code == 404
    assert sum(n.metrics.value("conveyor_schedule_jobs_total") for n in nodes) == len(jobs)


async def _count_at_least(client: httpx.AsyncClient, tenant: str, name: str, n: int) -> bool:
    return len(await scheduled(client, tenant, name)) >= n


async def _all_completed(client: httpx.AsyncClient, ids: list[str]) -> bool:
    return all([(await client.get(f"/jobs/{i}")).json()["status"] == "COMPLETED" for i in ids])


async def test_pause_and_resume(node: Node, tenant: str) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            body = {"tenantId": tenant, "every": "1s", "job": {**JOB, "priority": 2}}
            assert (await client.put("/schedules/beat", json=body)).status_code == 201
            await wait_until(lambda: _count_at_least(client, tenant, "beat", 1), interval=0.05)
            r = await client.post("/schedules/beat/pause", params={"tenantId": tenant})
            assert r.status_code == 200 and r.json()["paused"] is True and r.json()["nextFireAt"] is None
            fired = len(await scheduled(client, tenant, "beat"))
            await trio.sleep(2.2)
            assert len(await scheduled(client, tenant, "beat")) <= fired + 1  # a fire in flight at most
            paused = len(await scheduled(client, tenant, "beat"))
            got = (await client.get("/schedules/beat", params={"tenantId": tenant})).json()
            assert got["lastJobId"] is not None and got["lastFireAt"] is not None
            r = await client.post("/schedules/beat/resume", params={"tenantId": tenant})
            assert r.status_code == 200 and r.json()["paused"] is False
            assert parse(r.json()["nextFireAt"]) > parse(got["updatedAt"])  # from now: no catch-up
            await wait_until(lambda: _count_at_least(client, tenant, "beat", paused + 2), interval=0.05)
            jobs = await scheduled(client, tenant, "beat")
            assert {j["priority"] for j in jobs} == {2}
            # a PUT with paused: true replaces it, paused (200: it existed)
            r = await client.put("/schedules/beat", json={**body, "paused": True})
            assert r.status_code == 200 and r.json()["paused"] is True
            listed = (await client.get("/schedules", params={"tenantId": tenant})).json()["schedules"]
            assert [s["name"] for s in listed] == ["beat"]


async def test_bad_definitions_are_refused_by_name(node: Node, tenant: str) -> None:
    async with httpx.AsyncClient(base_url=base_url(node)) as client:
        for body, field in (
            ({"tenantId": tenant, "cron": "* * *", "job": JOB}, "cron"),
            ({"tenantId": tenant, "cron": "0 0 31 2 *", "job": JOB}, "cron"),  # never fires: was a 500
            ({"tenantId": tenant, "cron": "0 0 * * *", "timezone": "Nowhere/Else", "job": JOB}, "timezone"),
            ({"tenantId": tenant, "every": "10ms", "job": JOB}, "every"),
            ({"tenantId": tenant, "every": "1m", "job": {"type": "sleep", "payload": {"delayMs": -1}}}, "job.payload.delayMs"),
            ({"tenantId": tenant, "every": "1m"}, "job"),
            ({"every": "1m", "job": JOB}, "tenantId"),
        ):
            r = await client.put("/schedules/s1", json=body)
            assert r.status_code == 400, r.text
            assert [d["field"] for d in r.json()["details"]] == [field]
        r = await client.put("/schedules/bad%20name", json={"tenantId": tenant, "every": "1m", "job": JOB})
        assert r.status_code == 400 and r.json()["details"][0]["field"] == "name"
        r = await client.put("/schedules/s1", content=b"[1", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert (await client.get("/schedules", params={"tenantId": tenant})).json() == {"schedules": []}
        for method, path in (("GET", "/schedules/none"), ("DELETE", "/schedules/none"),
                             ("POST", "/schedules/none/pause"), ("POST", "/schedules/none/resume")):
            r = await client.request(method, path, params={"tenantId": tenant})
            assert (r.status_code, r.json()) == (404, {"error": "Schedule not found"})


async def test_a_tenant_cannot_see_or_touch_another_tenants_schedules_and_has_a_cap(start_node: Any) -> None:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY)
    a, b = bearer(await new_tenant(node, "sched-a", maxSchedules=2)), bearer(await new_tenant(node, "sched-b"))
    await wait_until(lambda: node.limits.of("sched-a").max_schedules == 2)
    async with httpx.AsyncClient(base_url=base_url(node)) as client:
        hourly = {"cron": "0 * * * *", "job": JOB}
        assert (await client.put("/schedules/one", json=hourly, headers=a)).status_code == 201
        assert (await client.put("/schedules/two", json=hourly, headers=a)).status_code == 201
        r = await client.put("/schedules/three", json=hourly, headers=a)
        assert r.status_code == 409 and "maxSchedules" in r.json()["error"]
        assert (await client.put("/schedules/two", json={**hourly, "cron": "5 * * * *"}, headers=a)).status_code == 200
        # B sees none of A's, cannot touch them, and has its own "one"
        assert (await client.get("/schedules", headers=b)).json() == {"schedules": []}
        for method, path in (("GET", "/schedules/one"), ("DELETE", "/schedules/one"),
                             ("POST", "/schedules/one/pause"), ("POST", "/schedules/one/resume")):
            assert (await client.request(method, path, headers=b)).status_code == 404
        assert (await client.get("/schedules", params={"tenantId": "sched-a"}, headers=b)).status_code == 403
        r = await client.put("/schedules/one", json={**hourly, "tenantId": "sched-a"}, headers=b)
        assert r.status_code == 403
        assert (await client.put("/schedules/one", json=hourly, headers=b)).status_code == 201
        mine = (await client.get("/schedules", headers=a)).json()["schedules"]
        assert [(s["name"], s["cron"], s["tenantId"]) for s in mine] == [("one", "0 * * * *", "sched-a"), ("two", "5 * * * *", "sched-a")]
        assert (await client.get("/schedules/one", headers=b)).json()["tenantId"] == "sched-b"
        assert (await client.get("/schedules")).status_code == 401
