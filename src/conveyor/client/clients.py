"""The clients: AsyncClient (trio or asyncio, through anyio) and Client (blocking)."""

from __future__ import annotations

import builtins
import json
import math
import queue
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketSession,
    aconnect_ws,
    connect_ws,
)

from .errors import ApiError, WaitTimeout
from .protocol import (
    _answer,
    _Call,
    _closed_for_good,
    _Feed,
    _headers,
    _job_body,
    _job_path,
    _list_params,
    _put_schedule,
    _schedule_call,
    _tenant_params,
    _upgrade_refusal,
    _ws_url,
)
from .records import TERMINAL, Event, Job, Schedule, Stats

RETRY_FIRST_S, RETRY_MOST_S = 0.5, 5.0  # reconnect backoff of events()
FEED_BUFFER = 64  # events read ahead of the caller; then the connection waits for it


def _may_have_ended(event: Event, job_id: str) -> bool:
    """Whether to read the job again: once subscribed (an end before that is in its row, one
    after it on the feed), after a gap in the feed, and when the feed says it ended."""
    return event.type in ("SUBSCRIBED", "RESYNC") or (event.job_id == job_id and event.status in TERMINAL)


def _leaves(group: BaseExceptionGroup[Any]) -> list[Any]:
    found: list[Any] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def _refusal(group: BaseExceptionGroup[Any]) -> ApiError | None:
    """The node's refusal among what ended a connection (a bad key: do not reconnect), or None."""
    for exc in _leaves(group):
        if isinstance(exc, ApiError):
            return exc
        if (refused := _closed_for_good(exc) or _upgrade_refusal(exc)) is not None:
            return refused
    return None


class _Received:
    """The caller's side of a feed: its events, or the refusal that ended it, raised."""

    def __init__(self, receive: MemoryObjectReceiveStream[Event | ApiError]) -> None:
        self._receive = receive

    def __aiter__(self) -> _Received:
        return self

    async def __anext__(self) -> Event:
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(item, ApiError):
            raise item
        return item


class AsyncClient:
    """A client under trio or asyncio. `tenant` is needed only with auth off (a key names its
    tenant)."""

    def __init__(self, url: str, api_key: str | None = None, *, tenant: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.tenant = tenant
        self.http = httpx.AsyncClient(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, call: _Call) -> Any:
        response = await self.http.request(call.method, call.path, json=call.body, params=call.params)
        return _answer(call, response)

    async def submit(self, type_: str, payload: Mapping[str, Any], **options: Any) -> str:
        """Submit a job; options: max_attempts, timeout_ms, priority (0 most urgent .. 9),
        delay_ms or run_at (an aware datetime, or ISO 8601 text). Returns its id."""
        body = _job_body(type_, payload, self.tenant, options)
        return str((await self._send(_Call("POST", "/jobs", body, ok=(201,))))["jobId"])

    async def submit_many(self, jobs: list[tuple[str, Mapping[str, Any]]], **options: Any) -> list[str]:
        """Submit (type, payload) jobs in one request, all or none; returns their ids in order."""
        body = {"jobs": [_job_body(t, p, self.tenant, options) for t, p in jobs]}
        return list((await self._send(_Call("POST", "/jobs/batch", body, ok=(201,))))["jobIds"])

    async def get(self, job_id: str) -> Job:
        return Job.from_json(await self._send(_Call("GET", _job_path(job_id))))

    async def list(self, *, status: str | None = None, type: str | None = None) -> AsyncIterator[Job]:  # noqa: A002
        """The tenant's jobs, newest first, a page per request (by cursor: none is skipped or
        repeated while new ones arrive)."""
        cursor = None
        while True:
            page = await self._send(_Call("GET", "/jobs", params=_list_params(self.tenant, status, type, cursor)))
            for body in page["jobs"]:
                yield Job.from_json(body)
            cursor = page.get("nextCursor")
            if not page["jobs"] or not cursor:
                return

    async def cancel(self, job_id: str) -> Job:
        """Cancel; a running job is being stopped when this returns (its end comes on the feed)."""
        return Job.from_json(await self._send(_Call("POST", _job_path(job_id, "cancel"), ok=(200, 202))))

    async def retry(self, job_id: str, max_attempts: int | None = None) -> Job:
        body = {} if max_attempts is None else {"maxAttempts": max_attempts}
        return Job.from_json(await self._send(_Call("POST", _job_path(job_id, "retry"), body)))

    async def put_schedule(
        self, name: str, type_: str, payload: Mapping[str, Any], *, cron: str | None = None,
        every: str | None = None, timezone: str | None = None, paused: bool = False, **options: Any,
    ) -> Schedule:
        """Create or replace a schedule: `cron` (five fields, in `timezone`) or `every` ("30s",
        "5m", "1h30m"); each fire makes a job of type_ with payload (options: max_attempts,
        timeout_ms, priority)."""
        call = _put_schedule(self.tenant, name, type_, payload, cron, every, timezone, paused, options)
        return Schedule.from_json(await self._send(call))

    async def get_schedule(self, name: str) -> Schedule:
        return Schedule.from_json(await self._send(_schedule_call(self.tenant, "GET", name)))

    async def list_schedules(self) -> builtins.list[Schedule]:
        body = await self._send(_Call("GET", "/schedules", params=_tenant_params(self.tenant)))
        return [Schedule.from_json(s) for s in body["schedules"]]

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule: no fire after this returns."""
        await self._send(_schedule_call(self.tenant, "DELETE", name))

    async def pause_schedule(self, name: str) -> Schedule:
        return Schedule.from_json(await self._send(_schedule_call(self.tenant, "POST", name, "pause")))

    async def resume_schedule(self, name: str) -> Schedule:
        return Schedule.from_json(await self._send(_schedule_call(self.tenant, "POST", name, "resume")))

    async def stats(self) -> Stats:
        params = {"tenantId": self.tenant} if self.tenant else None
        body = await self._send(_Call("GET", "/stats", params=params))
        return Stats(body["tenantId"], body["unfinished"], body["running"], body["waiting"])

    @asynccontextmanager
    async def events(self, after: str | None = None) -> AsyncIterator[AsyncIterator[Event]]:
        """The tenant's feed from now (or after an eventId), resuming across reconnects:

            async with client.events() as feed:
                async for event in feed: ...

        A context, not a bare iterator, because the connection lives in a task of its own."""
        send, receive = anyio.create_memory_object_stream[Event | ApiError](FEED_BUFFER)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._follow, _Feed(self.tenant, after), send)
                try:
                    yield _Received(receive)
                finally:
                    tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # the follower never raises (it hands its refusal over): what is here is the
            # caller's own exception, or its cancellation, and it goes on as it was raised
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _follow(self, feed: _Feed, out: MemoryObjectSendStream[Event | ApiError]) -> None:
        delay = RETRY_FIRST_S
        async with out:
            while True:
                refused: ApiError | None = None
                before = feed.delivered
                try:
                    async with aconnect_ws(_ws_url(self.url), self.http, session_class=AsyncWebSocketSession) as ws:
                        await ws.send_text(feed.subscribe(json.loads(await ws.receive_text())))
                        while True:
                            event, reply = feed.take(json.loads(await ws.receive_text()))
                            if reply is not None:
                                await ws.send_text(reply)
                            if event is not None:
                                await out.send(event)
                except* ApiError as group:
                    refused = _leaves(group)[0]
                except* (HTTPXWSException, httpx.TransportError, OSError) as group:
                    refused = _refusal(group)
                if refused is not None:
                    await out.send(refused)
                    return
                delay = RETRY_FIRST_S if feed.delivered > before else min(delay * 2, RETRY_MOST_S)
                await anyio.sleep(delay)

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109
        """The job once it has ended (COMPLETED, FAILED or CANCELLED), heard on the feed.
        Raises WaitTimeout after `timeout` seconds."""
        try:
            with anyio.fail_after(timeout if timeout is not None else math.inf):
                async with self.events() as feed:
                    async for event in feed:
                        if _may_have_ended(event, job_id):
                            job = await self.get(job_id)
                            if job.done:
                                return job
        except TimeoutError:
            pass
        raise WaitTimeout(f"job {job_id} did not end within {timeout}s")


def _receive(ws: WebSocketSession, deadline: float) -> str:
    """The next message; TimeoutError once the monotonic deadline has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    try:
        return str(ws.receive_text(timeout=None if left == math.inf else left))
    except queue.Empty:
        raise TimeoutError("the deadline passed") from None


class Client:
    """The blocking client: the same calls as AsyncClient."""

    def __init__(self, url: str, api_key: str | None = None, *, tenant: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.tenant = tenant
        self.http = httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, call: _Call) -> Any:
        return _answer(call, self.http.request(call.method, call.path, json=call.body, params=call.params))

    def submit(self, type_: str, payload: Mapping[str, Any], **options: Any) -> str:
        body = _job_body(type_, payload, self.tenant, options)
        return str(self._send(_Call("POST", "/jobs", body, ok=(201,)))["jobId"])

    def submit_many(self, jobs: list[tuple[str, Mapping[str, Any]]], **options: Any) -> list[str]:
        body = {"jobs": [_job_body(t, p, self.tenant, options) for t, p in jobs]}
        return list(self._send(_Call("POST", "/jobs/batch", body, ok=(201,)))["jobIds"])

    def get(self, job_id: str) -> Job:
        return Job.from_json(self._send(_Call("GET", _job_path(job_id))))

    def list(self, *, status: str | None = None, type: str | None = None) -> Iterator[Job]:  # noqa: A002
        cursor = None
        while True:
            page = self._send(_Call("GET", "/jobs", params=_list_params(self.tenant, status, type, cursor)))
            yield from (Job.from_json(body) for body in page["jobs"])
            cursor = page.get("nextCursor")
            if not page["jobs"] or not cursor:
                return

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._send(_Call("POST", _job_path(job_id, "cancel"), ok=(200, 202))))

    def retry(self, job_id: str, max_attempts: int | None = None) -> Job:
        body = {} if max_attempts is None else {"maxAttempts": max_attempts}
        return Job.from_json(self._send(_Call("POST", _job_path(job_id, "retry"), body)))

    def put_schedule(
        self, name: str, type_: str, payload: Mapping[str, Any], *, cron: str | None = None,
        every: str | None = None, timezone: str | None = None, paused: bool = False, **options: Any,
    ) -> Schedule:
        call = _put_schedule(self.tenant, name, type_, payload, cron, every, timezone, paused, options)
        return Schedule.from_json(self._send(call))

    def get_schedule(self, name: str) -> Schedule:
        return Schedule.from_json(self._send(_schedule_call(self.tenant, "GET", name)))

    def list_schedules(self) -> builtins.list[Schedule]:
        body = self._send(_Call("GET", "/schedules", params=_tenant_params(self.tenant)))
        return [Schedule.from_json(s) for s in body["schedules"]]

    def delete_schedule(self, name: str) -> None:
        self._send(_schedule_call(self.tenant, "DELETE", name))

    def pause_schedule(self, name: str) -> Schedule:
        return Schedule.from_json(self._send(_schedule_call(self.tenant, "POST", name, "pause")))

    def resume_schedule(self, name: str) -> Schedule:
        return Schedule.from_json(self._send(_schedule_call(self.tenant, "POST", name, "resume")))

    def stats(self) -> Stats:
        body = self._send(_Call("GET", "/stats", params={"tenantId": self.tenant} if self.tenant else None))
        return Stats(body["tenantId"], body["unfinished"], body["running"], body["waiting"])

    def events(self, after: str | None = None) -> Iterator[Event]:
        """The tenant's feed from now (or after an eventId), resuming across reconnects."""
        return self._events(after, math.inf)

    def _events(self, after: str | None, deadline: float) -> Iterator[Event]:
        """events(), until the monotonic deadline (then TimeoutError)."""
        feed = _Feed(self.tenant, after)
        delay = RETRY_FIRST_S
        while True:
            refused: ApiError | None = None
            before = feed.delivered
            try:
                with connect_ws(_ws_url(self.url), self.http, session_class=WebSocketSession) as ws:
                    ws.send_text(feed.subscribe(json.loads(_receive(ws, deadline))))
                    while True:
                        event, reply = feed.take(json.loads(_receive(ws, deadline)))
                        if reply is not None:
                            ws.send_text(reply)
                        if event is not None:
                            yield event
            except* (HTTPXWSException, httpx.TransportError, OSError) as group:
                refused = _refusal(group)
            if refused is not None:
                raise refused
            delay = RETRY_FIRST_S if feed.delivered > before else min(delay * 2, RETRY_MOST_S)
            if time.monotonic() + delay > deadline:
                raise TimeoutError("the deadline passed")
            time.sleep(delay)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it has ended, heard on the feed; WaitTimeout after `timeout` seconds."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        try:
            for event in self._events(None, deadline):
                if _may_have_ended(event, job_id):
                    job = self.get(job_id)
                    if job.done:
                        return job
        except TimeoutError:
            pass
        raise WaitTimeout(f"job {job_id} did not end within {timeout}s")
