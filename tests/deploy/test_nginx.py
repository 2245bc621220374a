"""Several nodes behind the repository's nginx.conf behave as one system."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.deploy.conftest import Nginx, render
from tests.faults.conftest import Cluster
from tests.helpers import wait_until


def test_the_rendered_config_keeps_everything_but_addresses() -> None:
    text = render(["127.0.0.1:1", "127.0.0.1:2"], 8080)
    assert "server 127.0.0.1:1 max_fails=1" in text and "server 127.0.0.1:2 max_fails=1" in text
    assert "node:3000" not in text and "listen 127.0.0.1:8080;" in text
    for directive in ("proxy_set_header Upgrade", "proxy_read_timeout 1h", "X-Forwarded-For",
                      "client_max_body_size", "limit_req zone=per_address", "limit_conn per_address_conn"):
        assert directive in text, directive


async def test_three_nodes_behind_nginx_share_jobs_and_feeds(
    cluster: Cluster, nginx: Nginx, tenant: str
) -> None:
    nodes = [await cluster.start(f"n{i}", CONVEYOR_CONCURRENCY=4) for i in range(3)]
    await nginx.start([node.url.removeprefix("http://") for node in nodes])
    ws_url = nginx.url.replace("http://", "ws://") + "/ws"
    completed: set[str] = set()
    with trio.fail_after(60):
        async with (
            httpx.AsyncClient(base_url=nginx.url, timeout=10) as client,
            open_websocket_url(ws_url) as ws,
        ):
            assert json.loads(await ws.get_message())["type"] == "CONNECTED"
            await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": tenant}))
            assert json.loads(await ws.get_message())["type"] == "SUBSCRIBED"
            ids = []
            for _ in range(60):  # one by one, so that nginx spreads them over the nodes
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 200}})
                assert r.status_code == 201, r.text
                ids.append(r.json()["jobId"])
            while len(completed) < len(ids):
                msg: dict[str, Any] = json.loads(await ws.get_message())
                if msg.get("status") == "COMPLETED":
                    completed.add(msg["jobId"])
            health = await client.get("/health")
            assert health.status_code == 200
    ran_on = {node for _, node in cluster.starts()}
    assert ran_on == {"n0", "n1", "n2"}  # the work was shared by all three
    # the one socket, connected to one node, heard the jobs that every node ran
    assert completed == set(ids)


async def test_nginx_answers_json_503_when_no_node_is_up(cluster: Cluster, nginx: Nginx) -> None:
    node = await cluster.start("lonely")
    await nginx.start([node.url.removeprefix("http://")])
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200
            await node.kill()

            async def unavailable() -> httpx.Response | None:
                r = await client.get("/health")
                return r if r.status_code == 503 else None

            r = await wait_until(unavailable)
    assert r.json() == {"error": "no conveyor node is available, try again later"}
    assert r.headers["Retry-After"] == "1"


async def test_nginx_limits_body_size_and_request_rate_per_address(
    cluster: Cluster, nginx: Nginx, tenant: str
) -> None:
    node = await cluster.start("n0")
    # the shipped limits (50 requests/s, bursts of 200) scaled down, so that a test client
    # exceeds them however fast or slow this machine is
    await nginx.start(
        [node.url.removeprefix("http://")],
        edits={"rate=50r/s": "rate=1r/s", "burst=200 nodelay": "burst=5 nodelay"},
    )
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
            big = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0, "pad": "x" * 2_000_000}}
            r = await client.post("/jobs", json=big)
            assert r.status_code == 413 and r.json()["error"].startswith("Request body too large")
            statuses = [(await client.get("/health")).status_code for _ in range(12)]
            refused = await client.get("/health")
    assert statuses[:5].count(200) >= 4 and 429 in statuses  # the burst passes, then 429s
    assert set(statuses) <= {200, 429}
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"].startswith("too many requests")
