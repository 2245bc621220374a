"""Several nodes behind the repository's nginx.conf behave as one system."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.conftest import free_port
from tests.deploy.conftest import Nginx, render
from tests.faults.conftest import Cluster
from tests.helpers import ResumingFeed, wait_until


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


async def test_rolling_restart_behind_nginx_loses_nothing(
    cluster: Cluster, nginx: Nginx, tenant: str
) -> None:
    ports = [free_port() for _ in range(3)]
    nodes = [
        await cluster.start(f"n{i}", port=port, CONVEYOR_CONCURRENCY=8, CONVEYOR_DRAIN_GRACE_SECONDS=2)
        for i, port in enumerate(ports)
    ]
    # an access log naming the upstream(s) that answered each request, for a failure's diagnosis
    log_line = (
        "log_format trace '$request_method $uri $status up=$upstream_addr "
        "upstatus=$upstream_status t=$request_time'; "
        f"access_log {nginx.workdir}/access.log trace;"
    )
    await nginx.start([f"127.0.0.1:{port}" for port in ports], edits={"access_log off;": log_line})
    ws_url = nginx.url.replace("http://", "ws://") + "/ws"

    def access_log() -> list[str]:
        return (nginx.workdir / "access.log").read_text().splitlines()

    accepted: list[str] = []
    failures: list[str] = []
    feeds = [ResumingFeed([ws_url], tenant) for _ in range(3)]
    restarted, submitter_done = trio.Event(), trio.Event()

    async def submit_continuously(client: httpx.AsyncClient) -> None:
        while not restarted.is_set():
            try:
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 50}})
                if r.status_code == 201:
                    accepted.append(r.json()["jobId"])
                else:
                    failures.append(f"{r.status_code} {r.text}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            await trio.sleep(0.02)
        submitter_done.set()

    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
            async with trio.open_nursery() as background:
                for feed in feeds:
                    await background.start(feed.run)
                background.start_soon(submit_continuously, client)
                # one at a time, as an operator would: drain, exit 0, start again on its port,
                # and go on to the next node once nginx sends the restarted one work again (it
                # tries a failed node again after fail_timeout: docs/operations.md)
                for node, port in zip(nodes, ports, strict=True):
                    before = len(accepted)
                    await wait_until(lambda before=before: len(accepted) >= before + 20)
                    node.signal(signal.SIGTERM)
                    assert await node.wait() == 0
                    seen = len(access_log())
                    await node.start()
                    await wait_until(lambda seen=seen, port=port: any(
                        line.startswith(f"POST /jobs 201 up=127.0.0.1:{port} ")
                        for line in access_log()[seen:]
                    ))
                await trio.sleep(1)  # some submissions after the last restart too
                restarted.set()
                await submitter_done.wait()  # its last request answered
                with trio.move_on_after(60):
                    await cluster.wait_terminal(tenant, len(accepted))
                # on failure, the requests nginx did not answer 201 at the first try
                retried = [line for line in access_log() if line.startswith("POST") and "," in line]
                assert failures == [], (failures, retried)
                # every client is back and, having resumed, has heard every event of the feed
                for feed in feeds:
                    await wait_until(lambda feed=feed: feed.completed() >= set(accepted))
                redis = cluster.queue_redis()
                try:
                    log = [i for i, _ in redis.xrange(cluster.feed_key(tenant))]
                finally:
                    redis.close()
                for feed in feeds:
                    await wait_until(lambda feed=feed: feed.subscribed and feed.last == log[-1])
                background.cancel_scope.cancel()
    statuses = await trio.to_thread.run_sync(cluster.statuses, tenant)
    assert failures == []  # zero failed submissions
    assert set(statuses) == set(accepted) and set(statuses.values()) == {"COMPLETED"}  # zero lost
    for feed in feeds:
        assert feed.connects >= 2 and feed.resyncs == 0  # each was cut off by a drain at least once
        assert [i for i, _ in feed.events] == log  # every event, once, in order
        assert feed.completed() == set(accepted)


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
