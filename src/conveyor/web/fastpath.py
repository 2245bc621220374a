"""The requests a node serves most, answered without quart: `POST /jobs`, `GET /health`,
`GET /jobs/{id}/events` and `GET /jobs`.

quart costs a request about a quarter of a millisecond of CPU beyond hypercorn's (its request
and app contexts, signals, the before and after hooks, a response object), paid on the one event
loop that also claims, records and fans out: on an idle node that is part of every submit's
latency, and under another tenant's reads (their refusals too) it is part of everyone's.
`FastRoutes` sits between the body gate and quart and answers these itself, with the same rules
and services the quart routes use (json_body_of, validation, Jobs.submit and Jobs.events, the
tenant read bounds of the same Requests, errors.answer_of) and the same answers: status, JSON as
quart writes it, Content-Type and the CORS header. A request that
it would not handle exactly as quart does goes to quart: one with a query string (quart checks
its parameters; GET /jobs's are checked here as quart does), an Idempotency-Key (the replay
path), a body of unknown length, larger than the limit (quart's 413), or a body on a GET.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" decoding error handler)
from werkzeug.datastructures import ImmutableMultiDict

from .. import validation
from ..wire import iso
from .bodies import ASGIApp, Receive, Scope, Send, declared_body, send_json
from .context import Services
from .errors import answer_of
from .jobs_api import list_answer
from .requests import Requests, json_body_of

EVENTS_PATH = re.compile(r"/jobs/([^/]+)/events")  # quart's <job_id>: anything but a slash


def quart_json(value: Any) -> bytes:
    """JSON as quart's provider writes an answer (compact, ASCII, keys in order, a newline)."""
    return (json.dumps(value, separators=(",", ":"), sort_keys=False) + "\n").encode()


class FastRoutes:
    def __init__(self, app: ASGIApp, svc: Services, req: Requests) -> None:
        self.app = app
        self.svc = svc
        self.req = req  # the quart routes' too: one read bound per tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path, query = scope.get("method"), scope.get("path"), scope.get("query_string")
        if path == "/jobs" and method == "GET" and _body_length(scope) == 0 and (args := _args(query)) is not None:
            await _read_body(receive)
            return await self._list(scope, send, args)
        if not query:
            if path == "/health" and method == "GET" and _body_length(scope) == 0:
                await _read_body(receive)  # its end: the connection stays open for the next one
                return await _answer(send, 200, quart_json({"status": "ok", "timestamp": iso(datetime.now(UTC))}))
            if path == "/jobs" and method == "POST" and self._plain_submit(scope):
                return await self._submit(scope, receive, send)
            if method == "GET" and (found := EVENTS_PATH.fullmatch(path or "")) and _body_length(scope) == 0:
                await _read_body(receive)
                return await self._events(scope, send, found[1])
        return await self.app(scope, receive, send)

    async def _list(self, scope: Scope, send: Send, args: ImmutableMultiDict[str, str]) -> None:
        try:
            validation.storable_params(args.items(multi=True), "query")  # quart's before_request
            answer = await list_answer(self.svc, self.req, await self.req.caller_of(scope), args)
        except Exception as exc:
            status, body, headers = answer_of(exc, self.svc.metrics, "GET /jobs")
            return await _answer(send, status, body.encode(), headers)
        await _answer(send, 200, answer)

    def _plain_submit(self, scope: Scope) -> bool:
        length = _body_length(scope)
        if length is None or length > self.svc.config.max_body_bytes:
            return False
        return not any(name == b"idempotency-key" for name, _ in scope.get("headers", ()))

    async def _submit(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        try:
            who = await self.req.caller_of(scope)
            job = validation.parse_submission(json_body_of(raw), self.svc.registry, self.svc.config, who.tenant)
            done = await self.svc.jobs.submit(who.tenant or job.tenant_id, [job], {"jobId": job.id}, None)
        except Exception as exc:
            status, body, headers = answer_of(exc, self.svc.metrics, "POST /jobs")
            return await _answer(send, status, body.encode(), headers)
        await _answer(send, 201, quart_json(done.answer))

    async def _events(self, scope: Scope, send: Send, job_id: str) -> None:
        try:
            validation.storable_params((("job_id", job_id),), "path")  # quart's before_request
            async with self.req.reading(who=await self.req.caller_of(scope)) as who:
                found_id, events = await self.svc.jobs.events(job_id, who.tenant)
        except Exception as exc:
            status, body, headers = answer_of(exc, self.svc.metrics, f"GET {scope.get('path')}")
            return await _answer(send, status, body.encode(), headers)
        await _answer(send, 200, quart_json({"jobId": found_id, "events": events}))


def _args(query: bytes | None) -> ImmutableMultiDict[str, str] | None:
    """A query string's parameters as quart parses them (werkzeug's Request.args), or None when
    it is not UTF-8 (quart's answer to that is its own)."""
    try:
        text = (query or b"").decode()
    except UnicodeDecodeError:
        return None
    return ImmutableMultiDict(parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote"))


def _body_length(scope: Scope) -> int | None:
    """The request's declared body length: 0 without a body, None when it is not known."""
    has_body, length = declared_body(scope)
    return length if has_body else 0


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    await send_json(send, status, body, [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()])
