"""POST /jobs, GET /health and GET /jobs/{id}/events answered in front of quart (web/fastpath.py):
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


async def test_job_events_are_answered_as_quart_answers_them(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(auth=True, auth_refresh_seconds=0.2)
    key = await new_tenant(node, tenant, readRate=1000, readBurst=1000)
    other = await new_tenant(node, f"{tenant}-b", readRate=1, readBurst=2)
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
        {"method": "GET", "path": "/jobs", "headers": []},
        {"method": "POST", "path": "/jobs/batch", "headers": [length]},
        {"method": "GET", "path": "/jobs/x/events/", "headers": []},
        {"method": "GET", "path": "/jobs/x/y/events", "headers": []},
        {"method": "GET", "path": "/jobs/x/events", "headers": [length]},
    ):
        passed, sent = await _routed(scope)
        assert passed and not sent, scope
    passed, sent = await _routed({"method": "GET", "path": "/health", "headers": []})
    assert not passed and sent[0]["status"] == 200
    passed, sent = await _routed({**post, "headers": [length]}, b'{"type":1}')
    assert not passed and sent[0]["status"] == 401  # answered here: the caller has no key
