"""POST /jobs, GET /health, GET /jobs/{id}/events and GET /jobs answered in front of quart (web/fastpath.py):
the same answers as quart's routes give, and quart still gets every request the fast path does not
handle exactly."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import httpx
import trio

from conveyor.auth import Unauthorized
from conveyor.config import Config
from conveyor.metrics import Metrics
from conveyor.node import Node
from conveyor.web.fastpath import FastRoutes
from tests.helpers import base_url, bearer, new_tenant, wait_until

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SHOWN = ("content-type", "access-control-allow-origin", "retry-after", "www-authenticate", "connection")


def seen(r: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What a client sees of an answer; job ids and times made alike."""
    text = UUID.sub("<id>", r.text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", text)
    return r.status_code, {h: r.headers[h] for h in SHOWN if h in r.headers}, json.loads(text)


async def test_submits_are_answered_as_quart_answers_them(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(auth=True, auth_refresh_seconds=0.2)
    key = await new_tenant(node, tenant, submitRate=1, submitBurst=6)
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("a job", bearer(key), b'{"type":"sleep","payload":{"delayMs":0}}'),
        ("malformed JSON", bearer(key), b'{"type":'),
        ("empty body", bearer(key), b""),
        ("not an object", bearer(key), b"[1]"),
        ("invalid fields", bearer(key), b'{"type":"email","payload":{"to":"nobody"},"maxAttempts":0}'),
        ("NaN", bearer(key), b'{"type":"sleep","payload":{"delayMs":0,"x":NaN}}'),
        ("unknown type", bearer(key), b'{"type":"nope","payload":{}}'),
        ("another tenant", bearer(key), b'{"tenantId":"someone-else","type":"sleep","payload":{"delayMs":0}}'),
        ("wrong key", bearer(key[:-2] + "xx"), b'{"type":"sleep","payload":{"delayMs":0}}'),
        ("no key", {}, b'{"type":"sleep","payload":{"delayMs":0}}'),
        ("over the rate", bearer(key), b'{"type":"sleep","payload":{"delayMs":0}}'),
    ]
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            answers = []
            for name, headers, body in cases:
                if name == "over the rate":
                    for _ in range(6):  # spend the burst
                        await client.post("/jobs", headers=headers, content=body)
                fast = await client.post("/jobs", headers=headers, content=body)
                # a query string sends the same request through quart's route
                slow = await client.post("/jobs?via=quart", headers=headers, content=body)
                answers.append((name, seen(fast), seen(slow)))
    for name, fast, slow in answers:
        assert fast == slow, name
    statuses = {name: fast[0] for name, fast, _ in answers}
    assert statuses == {
        "a job": 201, "malformed JSON": 400, "empty body": 400, "not an object": 400, "invalid fields": 400,
        "NaN": 400, "unknown type": 400, "another tenant": 403, "wrong key": 401, "no key": 401,
        "over the rate": 429,
    }


async def _reader_and_other(start_node: Any, tenant: str) -> tuple[Node, str, str]:
    """A node with auth, the key of a tenant who may read freely, and another's, who may read
    twice."""
    node: Node = await start_node(auth=True, auth_refresh_seconds=0.2)
    key = await new_tenant(node, tenant, readRate=1000, readBurst=1000)
    return node, key, await new_tenant(node, f"{tenant}-b", readRate=1, readBurst=2)


async def test_job_events_are_answered_as_quart_answers_them(start_node: Any, tenant: str) -> None:
    node, key, other = await _reader_and_other(start_node, tenant)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}}, headers=bearer(key))
            job = r.json()["jobId"]

            async def ended() -> bool:
                events = (await client.get(f"/jobs/{job}/events", headers=bearer(key))).json()["events"]
                return bool(events) and events[-1]["status"] == "COMPLETED"

            await wait_until(ended)
            cases = {
                "its events": (f"/jobs/{job}/events", bearer(key)),
                "another tenant's job": (f"/jobs/{job}/events", bearer(other)),
                "no such job": ("/jobs/00000000-0000-4000-8000-000000000000/events", bearer(key)),
                "not an id": ("/jobs/nope/events", bearer(key)),
                "NUL in the id": ("/jobs/a%00b/events", bearer(key)),
                "no key": (f"/jobs/{job}/events", {}),
                "over the read rate": (f"/jobs/{job}/events", bearer(other)),
            }
            answers = []
            for name, (path, headers) in cases.items():
                fast = await client.get(path, headers=headers)
                slow = await client.get(f"{path}?via=quart", headers=headers)
                answers.append((name, seen(fast), seen(slow)))
    for name, fast, slow in answers:
        assert fast == slow, name
    statuses = {name: fast[0] for name, fast, _ in answers}
    assert statuses == {"its events": 200, "another tenant's job": 404, "no such job": 404, "not an id": 404,
                        "NUL in the id": 400, "no key": 401, "over the read rate": 429}
    assert [e["status"] for e in answers[0][1][2]["events"]] == ["PENDING", "RUNNING", "COMPLETED"]


async def test_job_lists_are_answered_as_quart_answers_them(start_node: Any, tenant: str) -> None:
    node, key, other = await _reader_and_other(start_node, tenant)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            small = {"type": "sleep", "payload": {"delayMs": 0, "note": "é\u2028"}}
            big = {"type": "sleep", "payload": {"delayMs": 0, "blob": "x" * 20_000}}
            r = await client.post("/jobs/batch", json={"jobs": [small] * 4 + [big]}, headers=bearer(key))
            assert r.status_code == 201


            async def ended() -> bool:  # so that both answers see the same
                jobs = (await client.get("/jobs", headers=bearer(key))).json()["jobs"]
                return [job["status"] for job in jobs] == ["COMPLETED"] * 5

            await wait_until(ended)
            first = (await client.get("/jobs?limit=2", headers=bearer(key))).json()
            cases = {
                "a page": ("/jobs", bearer(key)),
                "limit and offset": ("/jobs?limit=2&offset=1", bearer(key)),
                "its cursor": (f"/jobs?limit=2&cursor={first['nextCursor']}", bearer(key)),
                "a status and type": ("/jobs?status=COMPLETED&status=x&type=sleep", bearer(key)),
                "bad status": ("/jobs?status=nope", bearer(key)),
                "bad limit": ("/jobs?limit=0&offset=-1", bearer(key)),
                "bad cursor": ("/jobs?cursor=nope", bearer(key)),
                "NUL in a value": ("/jobs?type=a%00b", bearer(key)),
                "NUL in a name": ("/jobs?a%00b=1", bearer(key)),
                "a lone surrogate, escaped": ("/jobs?type=%ED%A0%80", bearer(key)),  # stays escaped: no match
                "another tenant": (f"/jobs?tenantId={tenant}-b", bearer(key)),
                "the other's page": ("/jobs", bearer(other)),
                "no key": ("/jobs", {}),
                "over the read rate": ("/jobs", bearer(other)),
            }
            answers = []
            for name, (path, headers) in cases.items():
                fast = await client.get(path, headers=headers)
                # a GET with a body goes to quart's route (which ignores the body)
                slow = await client.request("GET", path, headers=headers, content=b" ")
                answers.append((name, seen(fast), seen(slow)))
    for name, fast, slow in answers:
        if name == "no key":  # with a body, the body gate refuses it, and closes the connection
            assert slow[1].pop("connection") == "close" and "connection" not in fast[1]
        assert fast == slow, name
    statuses = {name: fast[0] for name, fast, _ in answers}
    assert statuses == {
        "a page": 200, "limit and offset": 200, "its cursor": 200, "a status and type": 200, "bad status": 400, "bad limit": 400,
        "bad cursor": 400, "NUL in a value": 400, "NUL in a name": 400, "a lone surrogate, escaped": 200,
        "another tenant": 403, "the other's page": 200, "no key": 401, "over the read rate": 429,
    }
    page = answers[0][1][2]
    assert page["total"] == 5 and page["totalExact"] is True and len(page["jobs"]) == 5
    omitted = [job for job in page["jobs"] if job.get("payloadOmitted")]
    assert len(omitted) == 1 and omitted[0]["payload"] is None
    assert [job["payload"]["note"] for job in page["jobs"] if job not in omitted] == ["é\u2028"] * 4
    assert [len(a[1][2]["jobs"]) for a in answers[1:3]] == [2, 2]


async def test_health_is_answered_as_quart_answers_it(node: Node) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            fast, slow = await client.get("/health"), await client.get("/health?via=quart")
    assert seen(fast) == seen(slow)
    assert fast.json()["status"] == "ok"


async def _routed(scope: dict[str, Any], body: bytes = b"") -> tuple[bool, list[dict[str, Any]]]:
    """Whether FastRoutes passed the request to the app behind it, and what it sent itself."""
    passed: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        passed.append(True)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def caller_of(scope: Any) -> Any:
        raise Unauthorized("no key")

    svc = SimpleNamespace(config=Config(max_body_bytes=100), metrics=Metrics())
    routes = FastRoutes(app, svc, SimpleNamespace(caller_of=caller_of))  # type: ignore[arg-type]
    await routes({"type": "http", "query_string": b"", **scope}, receive, send)
    return bool(passed), sent


async def test_what_the_fast_path_leaves_to_quart() -> None:
    post = {"method": "POST", "path": "/jobs"}
    length = (b"content-length", b"10")
    for scope in (
        {**post, "query_string": b"x=1", "headers": [length]},
        {**post, "headers": [length, (b"idempotency-key", b"k")]},
        {**post, "headers": [(b"transfer-encoding", b"chunked")]},
        {**post, "headers": [(b"content-length", b"101")]},  # over the limit: quart's 413
        {**post, "headers": [(b"content-length", b"ten")]},
        {"method": "GET", "path": "/health", "headers": [length]},
        {"method": "HEAD", "path": "/health", "headers": []},
        {"method": "GET", "path": "/jobs", "headers": [length]},
        {"method": "GET", "path": "/jobs", "query_string": b"type=\xff", "headers": []},  # not UTF-8
        {"method": "HEAD", "path": "/jobs", "headers": []},
        {"method": "POST", "path": "/jobs/batch", "headers": [length]},
        {"method": "GET", "path": "/jobs/x/events/", "headers": []},
        {"method": "GET", "path": "/jobs/x/y/events", "headers": []},
        {"method": "GET", "path": "/jobs/x/events", "headers": [length]},
    ):
        passed, sent = await _routed(scope)
        assert passed and not sent, scope
    passed, sent = await _routed({"method": "GET", "path": "/jobs", "query_string": b"limit=x", "headers": []})
    assert not passed and sent[0]["status"] == 401  # the caller has no key (the limit is checked after)
    passed, sent = await _routed({"method": "GET", "path": "/health", "headers": []})
    assert not passed and sent[0]["status"] == 200
    passed, sent = await _routed({**post, "headers": [length]}, b'{"type":1}')
    assert not passed and sent[0]["status"] == 401  # answered here: the caller has no key
