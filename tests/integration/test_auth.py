"""Authentication on HTTP and WebSocket, and the admin API that manages tenants and keys.

Every refusal happens before any data flows: no job, no event, no row is answered or written.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import httpx
import psycopg
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from conveyor import keys
from conveyor.node import Node
from tests.helpers import ADMIN_KEY, base_url, bearer, new_tenant, wait_until
from tests.integration.test_websocket import assert_subscribed, next_message, ws_url


@pytest.fixture
async def secure_node(start_node: Any) -> Node:
    node: Node = await start_node(auth=True, admin_key=ADMIN_KEY, auth_refresh_seconds=0.2)
    return node


def admin() -> dict[str, str]:
    return bearer(ADMIN_KEY)


def forged_keys(real: str) -> dict[str, dict[str, str]]:
    key_id = keys.key_id_of(real)
    return {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {real}"},
        "empty bearer": {"Authorization": "Bearer"},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "unknown id": bearer(f"cvk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"),
        "right id, wrong secret": bearer(f"cvk_{key_id}_{secrets.token_urlsafe(32)}"),
        "truncated": bearer(real[:-1]),
    }


async def count_rows(node: Node) -> int:
    def work(conn: Any) -> int:
        return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]

    return await node.pg._run(work)


async def test_http_refuses_missing_malformed_and_forged_keys(secure_node: Node, tenant: str) -> None:
    node = secure_node
    key = await new_tenant(node, tenant)
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            ok = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}}, headers=bearer(key))
            assert ok.status_code == 201, ok.text
            job_id = ok.json()["jobId"]
            requests = [
                ("GET", "/jobs", None),
                ("GET", f"/jobs?tenantId={tenant}", None),
                ("GET", f"/jobs/{job_id}", None),
                ("POST", "/jobs", {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}}),
                ("POST", "/jobs/batch", {"jobs": [{"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}}]}),
                ("POST", "/ws/tickets", None),
            ]
            for name, headers in forged_keys(key).items():
                for method, path, body in requests:
                    r = await client.request(method, path, json=body, headers=headers)
                    assert r.status_code == 401, (name, method, path, r.text)
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                    assert set(r.json()) == {"error"} and r.json()["error"].startswith("Unauthorized")
                    assert job_id not in r.text and tenant not in r.text
            assert await count_rows(node) == 1  # nothing a refused request sent was stored
            assert (await client.get(f"/jobs/{job_id}", headers=bearer(key))).status_code == 200
    assert node.metrics.value("conveyor_auth_failures_total") == 7 * 6


async def test_more_than_one_authorization_header_is_refused(secure_node: Node, tenant: str) -> None:
    """Two Authorization headers may name two tenants: every route refuses them (401), whether
    the body gate, the routes in front of quart, quart's or the admin guard reads them."""
    node = secure_node
    mine, theirs = await new_tenant(node, tenant), await new_tenant(node, f"{tenant}-b")
    two = [("Authorization", f"Bearer {mine}"), ("Authorization", f"Bearer {theirs}")]
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = (await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}},
                                        headers=bearer(mine))).json()["jobId"]
            for method, path, body in [
                ("GET", "/jobs", None),  # in front of quart
                ("GET", f"/jobs/{job_id}/events", None),
                ("GET", f"/jobs/{job_id}", None),  # quart
                ("POST", "/jobs", {"type": "sleep", "payload": {"delayMs": 0}}),  # the body gate
                ("POST", "/ws/tickets", None),
            ]:
                r = await client.request(method, path, json=body, headers=two)
                assert r.status_code == 401, (method, path, r.text)
                assert "one Authorization header" in r.json()["error"]
            r = await client.get("/admin/tenants", headers=[("Authorization", f"Bearer {ADMIN_KEY}")] * 2)
            assert r.status_code == 401, r.text
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(ws_url(node), extra_headers=[(k.lower().encode(), v.encode()) for k, v in two]):
                pass
        assert rejected.value.status_code == 401
    assert await count_rows(node) == 1  # the refused submit stored nothing


async def test_a_revoked_key_stops_working_on_every_node(
    secure_node: Node, start_node: Any, tenant: str
) -> None:
    other: Node = await start_node(auth=True, auth_refresh_seconds=0.2)
    key = await new_tenant(secure_node, tenant)
    key_id = keys.key_id_of(key)
    with trio.fail_after(20):
        async with httpx.AsyncClient() as client:
            for node in (secure_node, other):  # both nodes now hold the key in their caches
                assert (await client.get(f"{base_url(node)}/jobs", headers=bearer(key))).status_code == 200
            r = await client.post(
                f"{base_url(secure_node)}/admin/tenants/{tenant}/keys/{key_id}/revoke", headers=admin()
            )
            assert r.status_code == 200 and r.json()["revokedAt"] is not None
            # at once on the node that revoked it
            assert (await client.get(f"{base_url(secure_node)}/jobs", headers=bearer(key))).status_code == 401

            async def refused_elsewhere() -> bool:
                r = await client.get(f"{base_url(other)}/jobs", headers=bearer(key))
                return r.status_code == 401

            await wait_until(refused_elsewhere)  # within the refresh interval on the others


async def test_admin_api_manages_tenants_and_keys(secure_node: Node, database_url: str) -> None:
    node = secure_node
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            assert (await client.get("/admin/tenants")).status_code == 401
            assert (await client.get("/admin/tenants", headers=bearer("x" * 30))).status_code == 401
            r = await client.post("/admin/tenants", json={"id": "acme", "maxRunning": 5}, headers=admin())
            assert r.status_code == 201, r.text
            assert r.json()["overrides"] == {"maxRunning": 5}
            assert r.json()["limits"]["maxRunning"] == 5
            assert r.json()["limits"]["maxQueued"] == node.config.tenant_max_queued
            dup = await client.post("/admin/tenants", json={"id": "acme"}, headers=admin())
            assert dup.status_code == 409 and "already exists" in dup.json()["error"]
            for bad in ({"id": "no spaces"}, {"id": ""}, {}, {"id": "x", "maxRunning": -1},
                        {"id": "x", "submitRate": "fast"}, {"id": "x", "colour": "red"}, []):
                r = await client.post("/admin/tenants", json=bad, headers=admin())
                assert r.status_code == 400, (bad, r.text)
                assert r.json()["details"], bad
            r = await client.patch("/admin/tenants/acme", json={"maxRunning": None, "maxQueued": 7}, headers=admin())
            assert r.status_code == 200 and r.json()["overrides"] == {"maxQueued": 7}
            assert (await client.patch("/admin/tenants/ghost", json={}, headers=admin())).status_code == 404

            created = await client.post("/admin/tenants/acme/keys", json={"name": "ci"}, headers=admin())
            assert created.status_code == 201
            key = created.json()["key"]
            assert keys.key_id_of(key) == created.json()["id"]
            assert (await client.post("/admin/tenants/ghost/keys", headers=admin())).status_code == 404
            listed = await client.get("/admin/tenants/acme/keys", headers=admin())
            assert [k["name"] for k in listed.json()["keys"]] == ["ci"]
            assert key not in listed.text and "digest" not in listed.text
            assert (await client.get("/admin/tenants/ghost/keys", headers=admin())).status_code == 404
            tenants = (await client.get("/admin/tenants", headers=admin())).json()["tenants"]
            assert [(t["id"], t["activeKeys"]) for t in tenants] == [("acme", 1)]

            # the key works and names its tenant
            r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}}, headers=bearer(key))
            assert r.status_code == 201
            bad_revoke = await client.post("/admin/tenants/acme/keys/0000000000000000/revoke", headers=admin())
            assert bad_revoke.status_code == 404
    # stored hashed: the key appears nowhere in the database, its SHA-256 digest does
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
        dump = json.dumps([list(map(str, row)) for row in rows])
        assert key not in dump and key.rsplit("_", 1)[1] not in dump
        (digest,) = conn.execute("SELECT digest FROM api_keys").fetchone()
        assert digest == hashlib.sha256(key.encode()).hexdigest()


async def test_admin_api_is_off_without_an_admin_key(start_node: Any) -> None:
    node = await start_node(auth=True)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.get("/admin/tenants", headers=admin())
            assert r.status_code == 404 and "CONVEYOR_ADMIN_KEY" in r.json()["error"]


# --- WebSocket --------------------------------------------------------------------------------


async def closed_with(ws: Any) -> tuple[int, str]:
    """Read until the server closes; any message before that fails the test."""
    try:
        message = await ws.get_message()
    except ConnectionClosed as closed:
        return closed.reason.code, closed.reason.reason or ""
    raise AssertionError(f"expected a close, got {message}")


async def test_websocket_auth_message_then_own_tenant_only(secure_node: Node, tenant: str) -> None:
    key = await new_tenant(secure_node, tenant)
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(secure_node)) as ws:
            await ws.send_message(json.dumps({"type": "AUTH", "apiKey": key}))
            assert await next_message(ws) == {
                "type": "CONNECTED", "message": "Connected to job updates", "tenantId": tenant
            }
            await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": "someone-else"}))
            refused = await next_message(ws)
            assert refused["type"] == "ERROR" and "forbidden" in refused["error"]
            await ws.send_message(json.dumps({"type": "SUBSCRIBE"}))  # own tenant by default
            assert_subscribed(await next_message(ws), tenant)
            async with httpx.AsyncClient(base_url=base_url(secure_node)) as client:
                r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}}, headers=bearer(key))
            update = await next_message(ws)
            assert update["type"] == "JOB_UPDATE" and update["jobId"] == r.json()["jobId"]


@pytest.mark.parametrize(
    "first",
    [
        {"type": "SUBSCRIBE", "tenantId": "x"},
        {"type": "PING"},
        {"type": "AUTH"},
        {"type": "AUTH", "apiKey": "cvk_0000000000000000_" + "A" * 43},
        {"type": "AUTH", "apiKey": "garbage"},
        "not json",
    ],
)
async def test_websocket_refuses_anything_but_a_valid_auth_first(
    secure_node: Node, tenant: str, first: Any
) -> None:
    await new_tenant(secure_node, tenant)
    with trio.fail_after(10):
        async with open_websocket_url(ws_url(secure_node)) as ws:
            await ws.send_message(first if isinstance(first, str) else json.dumps(first))
            code, _ = await closed_with(ws)  # no CONNECTED, no ERROR, no event: just the close
    assert code == 4401


async def test_websocket_without_auth_is_closed_at_the_deadline(secure_node: Node) -> None:
    with trio.fail_after(15):
        async with open_websocket_url(ws_url(secure_node)) as ws:
            started = trio.current_time()
            code, reason = await closed_with(ws)
    assert code == 4401 and "timed out" in reason
    assert 4 <= trio.current_time() - started < 10


async def test_websocket_upgrade_with_header_or_bad_header(secure_node: Node, tenant: str) -> None:
    key = await new_tenant(secure_node, tenant)
    with trio.fail_after(10):
        async with open_websocket_url(
            ws_url(secure_node), extra_headers=[(b"authorization", f"Bearer {key}".encode())]
        ) as ws:
            assert (await next_message(ws))["tenantId"] == tenant
        for header in (f"Bearer {key[:-2]}xx", "Bearer nope", f"Basic {key}"):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(
                    ws_url(secure_node), extra_headers=[(b"authorization", header.encode())]
                ):
                    pass
            assert rejected.value.status_code == 401
            assert b"Unauthorized" in (rejected.value.body or b"")


async def test_websocket_tickets_are_single_use_and_expire(secure_node: Node, tenant: str) -> None:
    node = secure_node
    key = await new_tenant(node, tenant)
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/ws/tickets", headers=bearer(key))
            assert r.status_code == 201 and r.json()["expiresInSeconds"] == 30
            ticket = r.json()["ticket"]
            assert key not in ticket
            async with open_websocket_url(f"{ws_url(node)}?ticket={ticket}") as ws:
                assert (await next_message(ws))["tenantId"] == tenant
            expired, digest = keys.new_ticket()
            await node.redis.put_ticket(digest, f"{tenant} {keys.key_id_of(key)}", 50)
            await trio.sleep(0.2)
            revoked_ticket = (await client.post("/ws/tickets", headers=bearer(key))).json()["ticket"]
            await client.post(
                f"/admin/tenants/{tenant}/keys/{keys.key_id_of(key)}/revoke", headers=admin()
            )
            for name, bad in (("reused", ticket), ("expired", expired), ("forged", "x" * 43),
                              ("of a revoked key", revoked_ticket), ("oversized", "y" * 5000)):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(f"{ws_url(node)}?ticket={bad}"):
                        pass
                assert rejected.value.status_code == 401, name


async def test_revoking_a_key_closes_its_sockets_on_every_node(
    secure_node: Node, start_node: Any, tenant: str
) -> None:
    other: Node = await start_node(auth=True, auth_refresh_seconds=0.2)
    key = await new_tenant(secure_node, tenant)
    second_key = (await httpx.AsyncClient(base_url=base_url(secure_node)).post(
        f"/admin/tenants/{tenant}/keys", headers=admin())).json()["key"]
    header = [(b"authorization", f"Bearer {key}".encode())]
    with trio.fail_after(20):
        async with (
            open_websocket_url(ws_url(secure_node), extra_headers=header) as here,
            open_websocket_url(ws_url(other), extra_headers=header) as there,
            open_websocket_url(
                ws_url(other), extra_headers=[(b"authorization", f"Bearer {second_key}".encode())]
            ) as unrelated,
        ):
            for ws in (here, there, unrelated):
                assert (await next_message(ws))["type"] == "CONNECTED"
            async with httpx.AsyncClient(base_url=base_url(secure_node)) as client:
                r = await client.post(
                    f"/admin/tenants/{tenant}/keys/{keys.key_id_of(key)}/revoke", headers=admin()
                )
                assert r.status_code == 200
            assert await closed_with(here) == (4401, "API key revoked")
            assert await closed_with(there) == (4401, "API key revoked")
            await unrelated.send_message(json.dumps({"type": "PING"}))
            assert await next_message(unrelated) == {"type": "PONG"}  # another key's socket stays
        # and the revoked key opens no new socket, by header or by AUTH, on either node
        for node in (secure_node, other):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(ws_url(node), extra_headers=header):
                    pass
            assert rejected.value.status_code == 401
            async with open_websocket_url(ws_url(node)) as ws:
                await ws.send_message(json.dumps({"type": "AUTH", "apiKey": key}))
                assert await closed_with(ws) == (4401, "invalid or revoked API key")


async def test_websocket_origin_allow_list(start_node: Any, tenant: str) -> None:
    node = await start_node(ws_origins=("https://app.example.com",))
    with trio.fail_after(10):
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(
                ws_url(node), extra_headers=[(b"origin", b"https://evil.example.com")]
            ):
                pass
        assert rejected.value.status_code == 403
        for headers in ([(b"origin", b"https://app.example.com")], []):  # no Origin: not a browser
            async with open_websocket_url(ws_url(node), extra_headers=headers) as ws:
                assert (await next_message(ws))["type"] == "CONNECTED"


async def test_auth_off_is_refused_on_a_public_bind(make_config: Any) -> None:
    from conveyor.config import ConfigError
    from conveyor.node import run_node

    with pytest.raises(ConfigError, match="loopback"):
        await run_node(make_config(auth=False, host="0.0.0.0"))


