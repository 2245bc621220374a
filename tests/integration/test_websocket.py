"""The WebSocket feed: the reference's protocol, cross-node events, errors and slow clients."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from conveyor import feed
from conveyor.node import Node
from tests.helpers import base_url, wait_until


def ws_url(node: Node) -> str:
    return base_url(node).replace("http://", "ws://") + "/ws"


async def next_message(ws: Any) -> dict[str, Any]:
    return json.loads(await ws.get_message())


async def subscribe(ws: Any, tenant: str) -> None:
    """Read the greeting, subscribe to a tenant and read the acknowledgement."""
    assert (await next_message(ws))["type"] == "CONNECTED"
    await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": tenant}))
    assert_subscribed(await next_message(ws), tenant)


def assert_subscribed(msg: dict[str, Any], tenant: str) -> None:
    """SUBSCRIBED names the tenant and the feed's newest event id, to resume from."""
    assert msg.keys() == {"type", "tenantId", "lastEventId"}, msg
    assert msg["type"] == "SUBSCRIBED" and msg["tenantId"] == tenant
    assert feed.parse_id(msg["lastEventId"]) is not None


async def updates_until_terminal(ws: Any, job_id: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        msg = await next_message(ws)
        if msg["type"] == "JOB_UPDATE" and msg["jobId"] == job_id:
            seen.append(msg)
            if msg["status"] in ("COMPLETED", "FAILED"):
                return seen


async def test_subscribe_and_receive_job_updates(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(node)) as ws:
            hello = await next_message(ws)
            assert hello == {"type": "CONNECTED", "message": "Connected to job updates"}
            await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": tenant}))
            assert_subscribed(await next_message(ws), tenant)
            async with httpx.AsyncClient(base_url=base_url(node)) as client:
                r = await client.post(
                    "/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 200}}
                )
                job_id = r.json()["jobId"]
            seen = await updates_until_terminal(ws, job_id)
            assert node.hub.connections == 1
        # the client closed: its subscriptions are gone from the node
        await wait_until(lambda: node.hub.connections == 0 and node.hub.subscriptions() == 0)
    assert [m["status"] for m in seen] == ["PENDING", "RUNNING", "COMPLETED"]
    ids = [feed.parse_id(m["eventId"]) for m in seen]
    assert None not in ids and ids == sorted(ids)  # each event has its id in the feed, in order
    last = seen[-1]
    assert last["tenantId"] == tenant and last["error"] is None and last["attempts"] == 1
    assert last["updatedAt"].endswith("Z")


async def test_failures_and_retries_are_published(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(node)) as ws:
            await subscribe(ws, tenant)
            async with httpx.AsyncClient(base_url=base_url(node)) as client:
                r = await client.post(
                    "/jobs",
                    json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 5000},
                          "timeoutMs": 50, "maxAttempts": 2},
                )
                job_id = r.json()["jobId"]
            seen = await updates_until_terminal(ws, job_id)
    assert [(m["status"], m["attempts"]) for m in seen] == [
        ("PENDING", 0), ("RUNNING", 1), ("PENDING", 1), ("RUNNING", 2), ("FAILED", 2),
    ]
    assert seen[-1]["error"] == "timed out after 50 ms"


async def test_only_the_subscribed_tenant_is_heard(node: Node, tenant: str) -> None:
    other = tenant + "-other"
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(node)) as ws:
            await subscribe(ws, tenant)
            async with httpx.AsyncClient(base_url=base_url(node)) as client:
                r = await client.post("/jobs", json={"tenantId": other, "type": "sleep", "payload": {"delayMs": 0}})
                other_id = r.json()["jobId"]

                async def other_done() -> bool:
                    return (await client.get(f"/jobs/{other_id}")).json()["status"] == "COMPLETED"

                await wait_until(other_done)
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}})
                mine = r.json()["jobId"]
            # events arrive in order: everything before our own job's updates would be the
            # other tenant's, and none may come
            msg = await next_message(ws)
            assert msg["type"] == "JOB_UPDATE" and msg["jobId"] == mine, msg


async def test_unsubscribe_stops_updates(node: Node, tenant: str) -> None:
    second = tenant + "-2"
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(node)) as ws:
            await next_message(ws)
            for t in (tenant, second):
                await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": t}))
                await next_message(ws)
            await ws.send_message(json.dumps({"type": "UNSUBSCRIBE", "tenantId": tenant}))
            assert await next_message(ws) == {"type": "UNSUBSCRIBED", "tenantId": tenant}
            async with httpx.AsyncClient(base_url=base_url(node)) as client:
                await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}})
                r = await client.post("/jobs", json={"tenantId": second, "type": "sleep", "payload": {"delayMs": 0}})
                second_id = r.json()["jobId"]
            msg = await next_message(ws)
            assert msg["jobId"] == second_id


async def test_bad_messages_get_an_error_and_the_socket_stays_open(node: Node, tenant: str) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(ws_url(node)) as ws:
            await next_message(ws)
            for raw, fragment in [
                ("not json", "not valid JSON"),
                ("[1, 2]", "JSON object"),
                (json.dumps({"type": "DANCE"}), "unknown message type"),
                (json.dumps({"type": "SUBSCRIBE"}), "tenantId"),
                (json.dumps({"type": "SUBSCRIBE", "tenantId": "x" * 101}), "tenantId"),
            ]:
                await ws.send_message(raw)
                msg = await next_message(ws)
                assert msg["type"] == "ERROR" and fragment in msg["error"], (raw, msg)
            await ws.send_message(json.dumps({"type": "PING"}))
            assert await next_message(ws) == {"type": "PONG"}


async def test_oversized_frame_closes_with_1009(node: Node) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(ws_url(node), max_message_size=1 << 22) as ws:
            await next_message(ws)
            await ws.send_message("x" * (128 * 1024))
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as closed:
                assert closed.reason.code == 1009


async def test_events_from_another_node_reach_this_one(start_node: Any, tenant: str) -> None:
    # Node A has one executor, kept busy; so node B runs the job, and A's socket still hears it.
    node_a = await start_node(concurrency=1)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node_a)) as client:
            r = await client.post(
                "/jobs", json={"tenantId": tenant + "-busy", "type": "sleep", "payload": {"delayMs": 5000}}
            )
            busy_id = r.json()["jobId"]

            async def busy_running() -> bool:
                return (await client.get(f"/jobs/{busy_id}")).json()["status"] == "RUNNING"

            await wait_until(busy_running)
            node_b = await start_node(concurrency=2)
            async with open_websocket_url(ws_url(node_a)) as ws:
                await subscribe(ws, tenant)
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}})
                job_id = r.json()["jobId"]
                seen = await updates_until_terminal(ws, job_id)
    assert seen[-1]["status"] == "COMPLETED"
    assert node_a.pool.leases == {busy_id: 1}  # A was busy with its own job the whole time
    assert node_b.pool.busy() == 0


async def test_instant_jobs_still_show_running_then_completed(node: Node, tenant: str) -> None:
    # A job that starts and finishes within one recorder batch is written to PostgreSQL once,
    # but the feed still carries both status changes, in order.
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(node)) as ws:
            await subscribe(ws, tenant)
            async with httpx.AsyncClient(base_url=base_url(node)) as client:
                jobs = [{"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}}] * 50
                ids = (await client.post("/jobs/batch", json={"jobs": jobs})).json()["jobIds"]
            statuses: dict[str, list[str]] = {i: [] for i in ids}
            while any(not s or s[-1] != "COMPLETED" for s in statuses.values()):
                msg = await next_message(ws)
                statuses[msg["jobId"]].append(msg["status"])
    assert all(s == ["PENDING", "RUNNING", "COMPLETED"] for s in statuses.values()), statuses
