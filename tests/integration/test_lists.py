"""GET /jobs paging through a real node: keyset cursors walk a tenant's jobs with none skipped or
repeated while new ones arrive, and totals say whether they are exact."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from conveyor.node import Node
from tests.helpers import base_url


async def batch(client: httpx.AsyncClient, tenant: str, n: int, type_: str = "sleep") -> list[str]:
    payload = {"delayMs": 600_000} if type_ == "sleep" else {"to": "a@example.com", "subject": "s", "body": "b"}
    jobs = [{"tenantId": tenant, "type": type_, "payload": payload, "delayMs": 600_000} for _ in range(n)]
    r = await client.post("/jobs/batch", json={"jobs": jobs})
    assert r.status_code == 201, r.text
    return list(r.json()["jobIds"])


async def walk(client: httpx.AsyncClient, params: dict[str, Any], between: Any = None) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await client.get("/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["jobs"]
        cursor = page["nextCursor"]
        if cursor is None:
            return seen
        if between is not None:
            await between()


async def test_a_cursor_walk_skips_and_repeats_nothing_while_jobs_arrive(node: Node, tenant: str) -> None:
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            first = await batch(client, tenant, 230)
            emails = await batch(client, tenant, 20, "email")
            arrived: list[str] = []

            async def more() -> None:  # new jobs between every two pages, of both types
                arrived.extend(await batch(client, tenant, 7))
                arrived.extend(await batch(client, tenant, 3, "email"))

            seen = await walk(client, {"tenantId": tenant, "limit": 40}, more)
            ids = [j["id"] for j in seen]
            assert len(ids) == len(set(ids))  # nothing twice
            assert set(first + emails) <= set(ids)  # nothing skipped
            assert set(ids) <= set(first + emails + arrived)
            created = [j["createdAt"] for j in seen]
            assert created == sorted(created, reverse=True)  # newest first
            # with a filter, the walk is of that type's jobs only
            typed = await walk(client, {"tenantId": tenant, "type": "email", "limit": 7}, more)
            assert {j["type"] for j in typed} == {"email"}
            assert set(emails) <= {j["id"] for j in typed}
            assert len(typed) == len({j["id"] for j in typed})
            listed = (await client.get("/jobs", params={"tenantId": tenant, "limit": 1})).json()
            assert listed["totalExact"] is True and listed["total"] == len(first + emails + arrived)
            # offset, the reference's way, still pages the same list
            r = await client.get("/jobs", params={"tenantId": tenant, "offset": 5, "limit": 5})
            page = (await client.get("/jobs", params={"tenantId": tenant, "limit": 10})).json()["jobs"]
            assert [j["id"] for j in r.json()["jobs"]] == [j["id"] for j in page[5:]]
            # the last page says so
            last = (await client.get("/jobs", params={"tenantId": tenant, "status": "RUNNING"})).json()
            assert last == {"jobs": [], "total": 0, "totalExact": True, "nextCursor": None}
            r = await client.get("/jobs", params={"tenantId": tenant, "cursor": "not-a-cursor"})
            assert r.status_code == 400 and r.json()["details"][0]["field"] == "cursor"


async def test_a_total_beyond_the_exact_bound_is_an_estimate(node: Node, tenant: str) -> None:
    async with httpx.AsyncClient(base_url=base_url(node)) as client:
        await batch(client, tenant, 300)
    await trio.to_thread.run_sync(_analyze, node.config.database_url)
    rows, total, exact = await node.pg.list_jobs(tenant, None, 10, 0, exact_up_to=100)
    assert len(rows) == 10 and exact is False and total >= 101
    rows, total, exact = await node.pg.list_jobs(tenant, None, 10, 0, exact_up_to=300)
    assert exact is True and total == 300


def _analyze(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")


def _set_statuses(database_url: str, tenant: str) -> list[tuple[str, str, str]]:
    """Give the tenant's jobs every status and a few shared created_at instants (ties, as a batch
    makes), straight in the table; its (id, status, type) newest first, as a list must be."""
    import psycopg

    statuses = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobs SET status = (%s::text[])[1 + (get_byte(uuid_send(id), 0) %% 5)],"
            " created_at = now() - make_interval(secs => get_byte(uuid_send(id), 1) %% 7)"
            " WHERE tenant_id = %s",
            (statuses, tenant),
        )
        rows = conn.execute(
            "SELECT id::text, status, type FROM jobs WHERE tenant_id = %s ORDER BY created_at DESC, id DESC",
            (tenant,),
        ).fetchall()
    assert {status for _, status, _ in rows} == set(statuses)
    return [(str(i), str(s), str(t)) for i, s, t in rows]


async def test_a_list_of_every_status_is_the_tables_order_by_cursor_and_by_offset(node: Node, tenant: str) -> None:
    """A list without a status filter merges the newest of each status (queries.sql,
    list_jobs_any_status): the same jobs in the same order as the whole table sorted."""
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            await batch(client, tenant, 90)
            await batch(client, tenant, 30, "email")
            expected = await trio.to_thread.run_sync(_set_statuses, node.config.database_url, tenant)
            walked = await walk(client, {"tenantId": tenant, "limit": 11})
            assert [(j["id"], j["status"], j["type"]) for j in walked] == expected
            by_offset = []
            for offset in range(0, len(expected), 13):
                r = await client.get("/jobs", params={"tenantId": tenant, "limit": 13, "offset": offset})
                by_offset += [j["id"] for j in r.json()["jobs"]]
            assert by_offset == [i for i, _, _ in expected]
            emails = await walk(client, {"tenantId": tenant, "type": "email", "limit": 4})
            assert [j["id"] for j in emails] == [i for i, _, t in expected if t == "email"]
            listed = (await client.get("/jobs", params={"tenantId": tenant, "type": "email", "limit": 1})).json()
            assert listed["total"] == 30 and listed["totalExact"] is True
