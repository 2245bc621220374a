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
from collections.abc import Awaitable, Callable
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

Answer = tuple[int, bytes]  # a route's status and JSON body

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
        method, path, query = scope.get("method"), scope.get("path") or "", scope.get("query_string")
        if method == "GET" and _body_length(scope) == 0:
            if path == "/jobs" and (args := _args(query)) is not None:
                return await self._answer(receive, send, "GET /jobs", lambda _: self._list(scope, args))
            if path == "/health" and not query:
                return await self._answer(receive, send, "GET /health", lambda _: _health())
            if (found := EVENTS_PATH.fullmatch(path)) and not query:
                return await self._answer(receive, send, f"GET {path}", lambda _: self._events(scope, found[1]))
        if method == "POST" and path == "/jobs" and not query and self._plain_submit(scope):
            return await self._answer(receive, send, "POST /jobs", lambda raw: self._submit(scope, raw))
        return await self.app(scope, receive, send)

    async def _answer(
        self, receive: Receive, send: Send, where: str, route: Callable[[bytes], Awaitable[Answer]]
    ) -> None:
        """Read the request's body to its end (then the connection stays open for the next
        request), give it to the route, and send what the route answers, or what its exception
        means (errors.answer_of, as quart's error handlers do)."""
        raw = await _read_body(receive)
        headers: dict[str, str] = {}
        try:
            status, body = await route(raw)
        except Exception as exc:
            status, text, headers = answer_of(exc, self.svc.metrics, where)
            body = text.encode()
        await send_json(send, status, body, [(k.lower().encode(), v.encode()) for k, v in headers.items()])

    def _plain_submit(self, scope: Scope) -> bool:
        length = _body_length(scope)
        if length is None or length > self.svc.config.max_body_bytes:
            return False
        return not any(name == b"idempotency-key" for name, _ in scope.get("headers", ()))

    async def _submit(self, scope: Scope, raw: bytes) -> Answer:
        who = await self.req.caller_of(scope)
        job = validation.parse_submission(json_body_of(raw), self.svc.registry, self.svc.config, who.tenant)
        done = await self.svc.jobs.submit(who.tenant or job.tenant_id, [job], {"jobId": job.id}, None)
        return 201, quart_json(done.answer)

    async def _list(self, scope: Scope, args: ImmutableMultiDict[str, str]) -> Answer:
        validation.storable_params(args.items(multi=True), "query")  # quart's before_request
        return 200, await list_answer(self.svc, self.req, await self.req.caller_of(scope), args)

    async def _events(self, scope: Scope, job_id: str) -> Answer:
        validation.storable_params((("job_id", job_id),), "path")  # quart's before_request
        async with self.req.reading(who=await self.req.caller_of(scope)) as who:
            found_id, events = await self.svc.jobs.events(job_id, who.tenant)
        return 200, quart_json({"jobId": found_id, "events": events})


async def _health() -> Answer:
    return 200, quart_json({"status": "ok", "timestamp": iso(datetime.now(UTC))})


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
