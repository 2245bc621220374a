"""Job operations: the one implementation of submit (with idempotency), get, list, cancel,
retry, a job's events and WebSocket tickets, which the HTTP API and the dashboard call.

It talks to the stores and to the writer (through `submit`, which is what makes group commit
possible); callers (web/) only parse requests and render what it returns, and never touch a
store. Outcomes that are answers, not failures, are exceptions the web layer maps to a status:
JobNotFound (404), JobConflict (409), IdempotencyMismatch (422), IdempotencyInUse (409).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from typing import Any, TypeVar

import attrs
import trio

from . import feed, history, keys, paging
from .actors.writer import AlreadySubmitted
from .config import Config
from .model import JobRecord, NewJob, Status
from .stores import PostgresStore, RedisStore, StoreUnavailable
from .stores.postgres import IdempotencyKey
from .stores.redis import Applied
from .validation import ListQuery, parse_job_id
from .wire import job_update

log = logging.getLogger(__name__)

TICKET_TTL_MS = 30_000  # a WebSocket ticket is good for one connection within this time


T = TypeVar("T")
TURN = 20  # items of a page between two yields to the event loop


async def in_turns(items: Iterable[T], turn: int = TURN) -> AsyncIterator[T]:
    """The items, with a yield to the event loop after every `turn` of them: a page of a hundred
    rows is several short steps of the loop, not one long one that every other request (another
    tenant's submit) waits behind."""
    for i, item in enumerate(items):
        if i and not i % turn:
            await trio.lowlevel.checkpoint()
        yield item


async def stepped(steps: Generator[None, None, T]) -> T:
    """The value of a pure computation that yields between its parts (such as
    validation.parse_batch_in_steps), with a turn of the event loop at each yield."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        await trio.lowlevel.checkpoint()


class JobNotFound(Exception):
    """No such job for this caller (another tenant's job is answered exactly the same)."""


class JobConflict(Exception):
    """The job is in a state that does not allow the operation; the message says which."""


class IdempotencyMismatch(Exception):
    """An Idempotency-Key was used before for a different request."""


class IdempotencyInUse(Exception):
    """An Idempotency-Key belongs to a request that has not finished."""


@attrs.frozen
class Submitted:
    answer: dict[str, Any]  # what the first request with this key was answered
    replayed: bool = False


@attrs.frozen
class Page:
    jobs: list[JobRecord]
    total: int
    total_exact: bool  # False: total is an estimate (beyond stores.postgres.EXACT_TOTAL_UP_TO)
    next_cursor: str | None  # None: this page is the last


@attrs.frozen
class CancelOutcome:
    job: JobRecord
    requested: bool  # True: the job runs, its node stops it and the feed carries the end


ToWriter = Callable[[list[NewJob], IdempotencyKey | None], Awaitable[None]]  # Node.submit


@attrs.define
class Jobs:
    config: Config
    pg: PostgresStore
    redis: RedisStore
    submit_to_writer: ToWriter

    async def submit(
        self, tenant: str, jobs: list[NewJob], answer: dict[str, Any], idempotency: tuple[str, bytes] | None
    ) -> Submitted:
        """Submit, or with an idempotency (key, request digest input), submit once: a request
        repeated with the same key (and the same request) gets the first one's answer and
        creates nothing."""
        if idempotency is None:
            await self.submit_to_writer(jobs, None)
            return Submitted(answer)
        key, request = idempotency
        digest = hashlib.sha256(request).hexdigest()
        for _ in range(2):
            stored = await self.pg.idempotent_response(tenant, key, retain_s=self.config.idempotency_seconds)
            if stored is not None:
                if stored["request_digest"] != digest:
                    raise IdempotencyMismatch("Idempotency-Key was already used for a different request")
                return Submitted(stored["response"], replayed=True)
            try:
                await self.submit_to_writer(jobs, IdempotencyKey(tenant, key, digest, answer))
                return Submitted(answer)
            except AlreadySubmitted:
                continue  # a concurrent request with this key won: answer what it answered
        raise IdempotencyInUse("Idempotency-Key is in use by a request that has not finished")

    async def get(self, job_id: str, tenant: str | None) -> JobRecord:
        """The caller's job (tenant None: any tenant's, with auth off); JobNotFound if none."""
        parsed = parse_job_id(job_id)
        row = await self.pg.get_job(parsed, tenant) if parsed else None
        if row is None:
            raise JobNotFound("Job not found")
        return JobRecord.from_row(row)

    async def page(self, query: ListQuery) -> Page:
        """A page of a tenant's jobs, newest first, how many there are, and the cursor of the
        next page."""
        rows, total, exact = await self.pg.list_jobs(
            query.tenant, query.status, query.limit, query.offset, query.type, after=query.after
        )
        found = [JobRecord.from_row(row) async for row in in_turns(rows)]
        more = len(found) == query.limit
        return Page(found, total, exact, paging.encode(found[-1].created_at, found[-1].id) if more else None)

    async def history(self, tenant: str) -> dict[str, Any]:
        """The tenant's last hour in slots (history.py), for the dashboard's charts."""
        now, hour, hashes = await self.redis.history(tenant)
        return history.columns(now, hour, hashes)

    async def depth(self, tenant: str) -> tuple[int, int]:
        """A tenant's unfinished jobs and how many of them run, from the dispatch index."""
        return await self.redis.depth(tenant)

    async def cancel(self, job_id: str, tenant: str | None) -> CancelOutcome:
        job = await self.get(job_id, tenant)
        if job.status not in (Status.PENDING, Status.RUNNING):
            raise JobConflict(f"Job is {job.status}: only PENDING or RUNNING jobs can be cancelled")
        # Redis first: a waiting job leaves the queues (held for us) before PostgreSQL calls it
        # CANCELLED, so no executor can claim a job that is already cancelled.
        verdict, attempt = await self.redis.cancel(job.tenant_id, job.id, lease_ms=int(self.config.lease_seconds * 1000))
        row = await self.pg.cancel_job(job.id, tenant)
        if row is None:  # it ended meanwhile: perhaps cancelled already, by its node
            now = await self.get(job_id, tenant)
            if now.status != Status.CANCELLED:
                raise JobConflict(f"Job is {now.status}: only PENDING or RUNNING jobs can be cancelled")
            return CancelOutcome(now, requested=False)
        cancelled = JobRecord.from_row(row)
        if cancelled.status == Status.CANCELLED:
            await self._publish_cancel(cancelled, verdict, attempt)
            return CancelOutcome(cancelled, requested=False)
        return CancelOutcome(cancelled, requested=True)

    async def _publish_cancel(self, job: JobRecord, verdict: str, attempt: int) -> None:
        """Publish a job's CANCELLED: by dropping the envelope we hold, or (no envelope) on its
        own. A running one's end is published by its node, whose outcome PostgreSQL refuses."""
        event = json.dumps(job_update(job))
        try:
            if verdict == "parked":
                await self.redis.finish([Applied(job.tenant_id, job.id, attempt, "done", 0, (event,))])
            elif verdict == "absent":
                await self.redis.publish([(job.tenant_id, job.id, event)])
        except StoreUnavailable as exc:
            # the held envelope's lease expires and the reaper publishes the end then
            log.warning("CANCELLED of job %s not published yet: %s", job.id, exc)

    async def retry(self, job_id: str, tenant: str | None, max_attempts: int) -> JobRecord:
        job = await self.get(job_id, tenant)
        row = await self.pg.retry_job(job.id, tenant, max_attempts)
        if row is None:
            raise JobConflict(f"Job is {job.status}: only FAILED or CANCELLED jobs can be retried")
        retried = JobRecord.from_row(row)
        # its PENDING first: once dispatched, a claim can publish its RUNNING at once
        try:
            await self.redis.publish([(retried.tenant_id, retried.id, json.dumps(job_update(retried)))])
        except StoreUnavailable as exc:
            log.warning("event of job %s not published: %s", retried.id, exc)
        try:
            await self.redis.reconcile([{**row, "due_in_ms": 0}])
        except StoreUnavailable as exc:
            log.warning("retried job %s not dispatched yet (the reconciler will): %s", row["id"], exc)
        return retried

    async def events(self, job_id: str, tenant: str | None) -> tuple[str, list[dict[str, Any]]]:
        """A job's id and its events, oldest first, each with its feed eventId. A tenant's own
        event index answers first, without PostgreSQL: it holds only the tenant's jobs (their
        ids are the node's, never the caller's); the row decides when it has none."""
        parsed = parse_job_id(job_id)
        if parsed is None:
            raise JobNotFound("Job not found")
        found = await self.redis.job_events(tenant, parsed) if tenant is not None else []
        if not found:  # none kept, another tenant's job, no such job; or auth is off
            if (owner := await self.pg.job_owner(parsed, tenant)) is None:
                raise JobNotFound("Job not found")
            if tenant is None:
                found = await self.redis.job_events(owner, parsed)
        return parsed, [json.loads(feed.with_id(i, d)) for i, d in found]

    async def ticket(self, tenant: str, key_id: str) -> str:
        """A one-use WebSocket ticket for a key's tenant, valid for TICKET_TTL_MS."""
        ticket, digest = keys.new_ticket()
        await self.redis.put_ticket(digest, f"{tenant} {key_id}", TICKET_TTL_MS)
        return ticket

    async def redeem_ticket(self, ticket: str) -> tuple[str, str] | None:
        """The (tenant, key id) a ticket was issued for, once; None when it is not (or no
        longer) a ticket."""
        value = await self.redis.take_ticket(keys.digest(ticket)) if len(ticket) <= 128 else None
        if not value:
            return None
        tenant, _, key_id = value.partition(" ")
        return tenant, key_id

    async def feed_head(self, tenant: str) -> str:
        """The id of the newest event in a tenant's feed ('0-0': none)."""
        return (await self.redis.feed_heads([tenant]))[tenant]

    async def read_feed(self, tenant: str, after: str, count: int) -> tuple[str, list[tuple[str, str, str]]]:
        """Up to count events of a tenant's feed after an id, as (id, event json, previous id),
        and the feed's newest id, read at one instant."""
        return await self.redis.read_feed(tenant, after, count)
