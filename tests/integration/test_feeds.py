"""Resumable feeds: every event has an id in its tenant's feed; a client that comes back with the
last id it saw gets exactly what it missed, or RESYNC when that is no longer kept. Slow clients,
heartbeats and progress events."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from conveyor import feed
from conveyor.actors import broadcaster
from conveyor.hub import CatchUp, FeedEvent, Hub, Subscriber
from conveyor.node import Node
from tests.helpers import base_url, wait_until
from tests.integration.test_websocket import next_message, ws_url


def marker(tenant: str, n: int, pad: int = 0) -> tuple[str, str, str]:
    """An event of our own, numbered, published the way cancel/retry/progress events are."""
    data = {"type": "JOB_PROGRESS", "jobId": f"job-{n}", "tenantId": tenant, "attempts": 1,
            "progress": 0, "message": str(n) + "x" * pad}
    return tenant, f"job-{n}", json.dumps(data)


async def publish(node: Node, tenant: str, numbers: range, pad: int = 0) -> None:
    for start in range(numbers.start, numbers.stop, 100):
        await node.redis.publish([marker(tenant, n, pad) for n in range(start, min(start + 100, numbers.stop))])


async def subscribe(ws: Any, tenant: str, after: str | None = None) -> dict[str, Any]:
    assert (await next_message(ws))["type"] == "CONNECTED"
    msg: dict[str, Any] = {"type": "SUBSCRIBE", "tenantId": tenant}
    if after is not None:
        msg["lastEventId"] = after
    await ws.send_message(json.dumps(msg))
    ack = await next_message(ws)
    assert ack["type"] == "SUBSCRIBED" and ack["tenantId"] == tenant, ack
    return ack


async def events(ws: Any, count: int) -> list[dict[str, Any]]:
    got = []
    while len(got) < count:
        msg = await next_message(ws)
        if msg["type"] != "PING":
            got.append(msg)
    return got


async def test_a_client_that_comes_back_gets_exactly_what_it_missed(node: Node, tenant: str) -> None:
    with trio.fail_after(30):
        async with open_websocket_url(ws_url(node)) as ws:
            ack = await subscribe(ws, tenant)
            before_any = ack["lastEventId"]
            await publish(node, tenant, range(0, 1))
            (first,) = await events(ws, 1)
            assert first["message"] == "0" and feed.parse_id(first["eventId"])
        # away: 500 events happen
        await publish(node, tenant, range(1, 501))
        async with open_websocket_url(ws_url(node)) as ws:
            ack = await subscribe(ws, tenant, after=first["eventId"])
            assert ack["resumed"] is True and ack["lastEventId"] == first["eventId"]
            missed = await events(ws, 500)
            assert [m["message"] for m in missed] == [str(n) for n in range(1, 501)]  # all, in order
            ids = [feed.parse_id(m["eventId"]) for m in missed]
            assert ids == sorted(set(ids)) and ids[0] > feed.parse_id(first["eventId"])  # type: ignore[operator]
            # then the live stream, with nothing repeated in between
            await publish(node, tenant, range(501, 502))
            (live,) = await events(ws, 1)
            assert live["message"] == "501"
        # the id of SUBSCRIBED, before any event was seen, resumes from there
        async with open_websocket_url(ws_url(node)) as ws:
            await subscribe(ws, tenant, after=before_any)
            everything = await events(ws, 502)
            assert [m["message"] for m in everything] == [str(n) for n in range(502)]


async def test_a_client_too_far_behind_is_told_to_resync(start_node: Any, tenant: str) -> None:
    node = await start_node(feed_retention_events=10)
    with trio.fail_after(30):
        async with open_websocket_url(ws_url(node)) as ws:
            await subscribe(ws, tenant)
            await publish(node, tenant, range(0, 1))
            (first,) = await events(ws, 1)
        await publish(node, tenant, range(1, 1001))  # the feed keeps about 10 (whole blocks)
        kept = len((await node.redis.read_feed(tenant, feed.NONE, 5000))[1])
        assert kept < 1000
        for n, stale in enumerate((first["eventId"], "99999999999999-0")):  # trimmed; never sent
            head = (await node.redis.feed_heads([tenant]))[tenant]
            async with open_websocket_url(ws_url(node)) as ws:
                await subscribe(ws, tenant, after=stale)
                (resync,) = await events(ws, 1)
                assert resync["type"] == "RESYNC" and resync["lastEventId"] == head, resync
                assert "REST API" in resync["error"]
                # and from there on, the live stream
                await publish(node, tenant, range(1001 + n, 1002 + n))
                (live,) = await events(ws, 1)
                assert live["message"] == str(1001 + n)


async def test_events_older_than_the_retention_age_are_gone(start_node: Any, tenant: str) -> None:
    node = await start_node(feed_retention_seconds=1.0)
    with trio.fail_after(30):
        await publish(node, tenant, range(0, 3))
        head, kept = await node.redis.read_feed(tenant, feed.NONE, 100)
        assert len(kept) == 3 and head == kept[-1][0]
        await trio.sleep(1.5)  # idle past the age: the feed and its head expire in Redis
        assert await node.redis.read_feed(tenant, feed.NONE, 100) == (feed.NONE, [])
        async with open_websocket_url(ws_url(node)) as ws:
            await subscribe(ws, tenant, after=kept[0][0])
            (resync,) = await events(ws, 1)
            assert resync["type"] == "RESYNC" and resync["lastEventId"] == feed.NONE
        # while events keep coming, those older than the age are trimmed (in whole blocks)
        old = range(3, 203)
        await publish(node, tenant, old)
        await trio.sleep(1.2)
        await publish(node, tenant, range(203, 204))
        _, kept = await node.redis.read_feed(tenant, feed.NONE, 1000)
        assert 1 <= len(kept) < len(old) + 1


async def test_a_bad_last_event_id_is_an_error(node: Node, tenant: str) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(ws_url(node)) as ws:
            assert (await next_message(ws))["type"] == "CONNECTED"
            for bad in ("yesterday", 12, "1-2-3", ""):
                await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": tenant, "lastEventId": bad}))
                msg = await next_message(ws)
                assert msg["type"] == "ERROR" and "lastEventId" in msg["error"], (bad, msg)


async def stalled_client(node: Node, tenant: str) -> trio.socket.SocketType:
    """A WebSocket client that subscribes and then never reads again, with a small receive
    buffer (loopback would otherwise autotune it up to tens of MiB)."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    await sock.connect(("127.0.0.1", node.config.port or int(base_url(node).rsplit(":", 1)[1])))
    ws = WSConnection(ConnectionType.CLIENT)
    await sock.send(ws.send(Request(host="127.0.0.1", target="/ws")))
    accepted = False
    while not accepted:
        ws.receive_data(await sock.recv(4096))
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    await sock.send(ws.send(TextMessage(json.dumps({"type": "SUBSCRIBE", "tenantId": tenant}))))
    return sock


async def test_a_stalled_client_does_not_delay_the_others(start_node: Any, tenant: str) -> None:
    node = await start_node(ws_send_queue=16)
    count = 2000
    with trio.fail_after(60):
        stalled = await stalled_client(node, tenant)
        with stalled:
            await wait_until(lambda: node.hub.subscriptions() == 1)
            async with open_websocket_url(ws_url(node)) as reader:
                await subscribe(reader, tenant)
                async with trio.open_nursery() as nursery:
                    # 2000 events of 8 KiB: far more than the stalled socket can hold
                    nursery.start_soon(publish, node, tenant, range(count), 8192)
                    got = await events(reader, count)
                assert [m["message"][: len(str(n))] for m, n in zip(got, range(count), strict=True)] == [
                    str(n) for n in range(count)
                ]
                # and the live stream goes on for the reader
                await publish(node, tenant, range(count, count + 100))
                more = await events(reader, 100)
                assert [m["message"][: len(str(n))] for m, n in zip(more, range(count, count + 100), strict=True)] == [
                    str(n) for n in range(count, count + 100)
                ]
                # what the node holds for the stalled one stays bounded: its queue is full and
                # it is marked lagged, so further events are dropped for it, to be read from the
                # feed if it ever reads again
                # (the reader may have lagged too, in this one process; it catches up and clears)
                def lagging() -> list[Any]:
                    return [sub for sub in node.hub.subscribers(tenant) if sub.lagged]

                await wait_until(lambda: len(lagging()) == 1)
                (slow,) = lagging()
                assert slow.receive.statistics().current_buffer_used <= 16


async def test_the_node_pings_and_closes_silent_sockets(start_node: Any, tenant: str) -> None:
    node = await start_node(ws_ping_seconds=0.2, ws_idle_timeout_seconds=1.0)
    with trio.fail_after(20):
        async with (
            open_websocket_url(ws_url(node)) as answering,
            open_websocket_url(ws_url(node)) as silent,
        ):
            assert (await next_message(answering))["type"] == "CONNECTED"
            pings = 0
            with trio.move_on_after(2.5):  # more than twice the idle timeout
                while True:
                    msg = await next_message(answering)
                    if msg["type"] == "PING":
                        pings += 1
                        await answering.send_message(json.dumps({"type": "PONG"}))
            assert pings >= 5
            await answering.send_message(json.dumps({"type": "PING"}))
            while (msg := await next_message(answering))["type"] == "PING":
                pass
            assert msg == {"type": "PONG"}  # still open
            try:
                while True:
                    await silent.get_message()
            except ConnectionClosed as exc:
                assert exc.reason is not None and exc.reason.code == 4408
                assert "PONG" in (exc.reason.reason or "")


async def test_a_running_job_reports_progress_throttled(start_node: Any, tenant: str) -> None:
    node = await start_node(progress_interval_ms=400)
    with trio.fail_after(20):
        async with open_websocket_url(ws_url(node)) as ws:
            await subscribe(ws, tenant)
            async with httpx.AsyncClient(base_url=base_url(node)) as client:
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 2000}})
                job_id = r.json()["jobId"]
            seen = []
            while True:
                msg = await next_message(ws)
                if msg.get("jobId") == job_id:
                    seen.append(msg)
                    if msg.get("status") == "COMPLETED":
                        break
    kinds = [m["type"] if m["type"] == "JOB_PROGRESS" else m["status"] for m in seen]
    assert kinds[:2] == ["PENDING", "RUNNING"] and kinds[-1] == "COMPLETED"
    reports = [m for m in seen if m["type"] == "JOB_PROGRESS"]
    # the sleep job reports every 250 ms (8 times in 2 s); at most one per 400 ms goes out
    assert 3 <= len(reports) <= 6, kinds
    assert kinds[2:-1] == ["JOB_PROGRESS"] * len(reports)
    progress = [m["progress"] for m in reports]
    assert progress == sorted(progress) and 0 <= progress[0] < progress[-1] < 100
    assert reports[-1]["message"].endswith("of 2000 ms") and reports[-1]["attempts"] == 1


async def test_a_jobs_events_are_found_by_index_and_the_index_stays_bounded(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(feed_retention_events=60)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            ids = []
            for _ in range(60):  # 180 events: three times what the feed keeps
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}})
                ids.append(r.json()["jobId"])
            await wait_until(lambda: all_completed(client, ids[-5:]))
            await wait_until(lambda: events_of(client, ids[-1], 3))
            newest = (await client.get(f"/jobs/{ids[-1]}/events")).json()["events"]
            oldest = (await client.get(f"/jobs/{ids[0]}/events")).json()["events"]
    assert [e["status"] for e in newest] == ["PENDING", "RUNNING", "COMPLETED"]
    assert all(e["jobId"] == ids[-1] for e in newest)
    assert oldest == []  # trimmed from the feed: nothing to show, and found without a scan
    client_ = node.redis.client
    p = node.config.redis_prefix
    # two generations of the index, each of at most about what the feed keeps
    indexed = sum(int(client_.hget(f"{p}:{gen}:{tenant}", "#") or 0) for gen in ("jev", "jev0"))
    assert indexed <= 2 * 60 + 3 * 3, indexed
    assert client_.hlen(f"{p}:jev:{tenant}") + client_.hlen(f"{p}:jev0:{tenant}") <= 2 * 60


async def all_completed(client: httpx.AsyncClient, ids: list[str]) -> bool:
    statuses = [(await client.get(f"/jobs/{job_id}")).json()["status"] for job_id in ids]
    return statuses == ["COMPLETED"] * len(ids)


async def events_of(client: httpx.AsyncClient, job_id: str, n: int) -> bool:
    return len((await client.get(f"/jobs/{job_id}/events")).json()["events"]) >= n


async def test_a_tenants_first_subscriber_ends_the_broadcasters_wait(
    stores: Any, tenant: str, monkeypatch: Any
) -> None:
    """The broadcaster's blocking read ends when a tenant gets its first subscriber on the node,
    so that the tenant's feed is read at once, not after the read's wait (30 s here: the test's
    deadline would end first); a tenant subscribing and unsubscribing in a loop cuts a read at
    most every CUT_EVERY_S (each cut closes a Redis connection). With more than one shard reads
    are not cut (a cut wait would take a feed wake-up with it): the new tenant is read from the
    next round (of 1 s here), and no read ends before its time."""
    _, redis = stores
    cut = redis.reads_end_early
    monkeypatch.setattr(broadcaster, "BLOCK_MS", 30_000 if cut else 1_000)
    reads = 0

    class Counted:
        """The store, counting the broadcaster's reads."""

        def __getattr__(self, name: str) -> Any:
            return getattr(redis, name)

        async def read_streams(self, streams: dict[str, str], block_ms: int) -> Any:
            nonlocal reads
            reads += 1
            return await redis.read_streams(streams, block_ms=block_ms)

    hub = Hub()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(broadcaster.run_broadcaster, Counted(), hub)
            await wait_until(lambda: reads >= 1)  # in a read, of the control stream only
            sub = Subscriber(16, lambda: None)
            hub.subscribe(tenant, sub)
            assert await sub.receive.receive() == CatchUp(tenant)
            await redis.publish([marker(tenant, 1)])
            event = await sub.receive.receive()
            assert isinstance(event, FeedEvent) and json.loads(event.data)["jobId"] == "job-1"
            before, started = reads, trio.current_time()
            for n in range(100):
                other = Subscriber(1, lambda: None)
                hub.subscribe(f"{tenant}-{n}", other)
                await trio.sleep(0.002)
                hub.unsubscribe(f"{tenant}-{n}", other)
            elapsed = trio.current_time() - started
            if cut:
                assert 1 <= reads - before <= elapsed / broadcaster.CUT_EVERY_S + 2
            else:
                assert reads - before <= elapsed / 1.0 + 2
            nursery.cancel_scope.cancel()


async def test_a_tenants_event_index_is_a_hash_table_from_its_first_write(start_node: Any, tenant: str) -> None:
    """Redis keeps a small hash as a listpack, searched field by field: the index of a tenant's
    job events (read and written for every job, three times) is a hash table from the start."""
    node: Node = await start_node()
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}})
            assert r.status_code == 201, r.text
            job_id = r.json()["jobId"]
            await wait_until(lambda: events_of(client, job_id, 3))
    index = node.redis.tkey(tenant, "jev", tenant)
    encoding = await trio.to_thread.run_sync(lambda: node.redis.client.object("encoding", index))
    assert encoding in (b"hashtable", "hashtable"), encoding
