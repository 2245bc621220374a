"""The job routes: submit one or a batch (with Idempotency-Key), list, get, cancel, retry, and
WebSocket tickets. Each parses with validation.py, calls the jobs service and renders with
wire.py."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from .. import validation
from ..auth import Principal
from ..handlers import FieldError
from ..jobs import TICKET_TTL_MS, in_turns, stepped
from ..model import NewJob
from ..wire import job_json
from .context import Services
from .errors import error
from .reads import list_cost
from .requests import Requests

IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")


async def list_answer(svc: Services, req: Requests, who: Principal, args: Mapping[str, str]) -> bytes:
    """GET /jobs's answer (quart's route and the fast path's), as JSON. Its jobs are rendered and
    encoded a turn at a time: a page is several short steps of the event loop."""
    query = validation.parse_list_query(args, who.tenant)
    async with req.reading(list_cost(query.limit), who):
        page = await svc.jobs.page(query)
    encoded = [json.dumps(job_json(job), separators=(",", ":")) async for job in in_turns(page.jobs)]
    rest = json.dumps({"total": page.total, "totalExact": page.total_exact, "nextCursor": page.next_cursor},
                      separators=(",", ":"))
    return f'{{"jobs":[{",".join(encoded)}],{rest[1:]}\n'.encode()


def register(app: QuartTrio, svc: Services, req: Requests) -> None:
    config, registry, jobs = svc.config, svc.registry, svc.jobs

    async def submit(who: Principal, new: list[NewJob], answer: dict[str, Any]) -> Any:
        key = request.headers.get("Idempotency-Key")
        idempotency = None
        if key is not None:
            if not IDEMPOTENCY_KEY_RE.fullmatch(key):
                raise validation.Invalid(
                    "Validation failed",
                    [FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")],
                )
            raw = await request.get_data()
            idempotency = (key, request.path.encode() + b"\n" + (raw if isinstance(raw, bytes) else raw.encode()))
        done = await jobs.submit(who.tenant or new[0].tenant_id, new, answer, idempotency)
        if done.replayed:
            return done.answer, 201, {"Idempotent-Replayed": "true"}
        return done.answer, 201

    @app.post("/jobs")
    async def create_job() -> Any:
        who = await req.caller()
        job = validation.parse_submission(await req.json_body(), registry, config, who.tenant)
        return await submit(who, [job], {"jobId": job.id})

    @app.post("/jobs/batch")
    async def create_jobs() -> Any:
        who = await req.caller()
        body = await req.json_body()
        new = await stepped(validation.parse_batch_in_steps(body, registry, config, who.tenant))
        return await submit(who, new, {"jobIds": [job.id for job in new]})

    @app.post("/jobs/<job_id>/cancel")
    async def cancel_job(job_id: str) -> Any:
        who = await req.caller()
        done = await jobs.cancel(job_id, who.tenant)
        if done.requested:  # running: its node stops it, and the feed carries the end
            return {**job_json(done.job), "cancelRequested": True}, 202
        return job_json(done.job)

    @app.post("/jobs/<job_id>/retry")
    async def retry_job(job_id: str) -> Any:
        who = await req.caller()
        body = await req.json_body() if (await request.get_data()).strip() else {}
        budget = body.get("maxAttempts", config.max_attempts) if isinstance(body, dict) else None
        if budget is None or not validation.is_int_in(budget, 1, validation.MAX_ATTEMPTS_LIMIT):
            raise validation.Invalid("Validation failed", [FieldError(
                "maxAttempts", f"must be an integer from 1 to {validation.MAX_ATTEMPTS_LIMIT}")])
        return job_json(await jobs.retry(job_id, who.tenant, budget))

    @app.get("/jobs")
    async def list_jobs() -> Any:
        answer = await list_answer(svc, req, await req.caller(), request.args)
        return Response(answer, content_type="application/json")

    @app.get("/jobs/<job_id>")
    async def get_job(job_id: str) -> Any:
        async with req.reading() as who:
            # another tenant's job is answered exactly as one that does not exist
            job = await jobs.get(job_id, who.tenant)
        return job_json(job)

    @app.post("/ws/tickets")
    async def create_ticket() -> Any:
        who = await req.caller()
        if who.tenant is None or who.key_id is None:
            return error(404, "auth is off on this node: connect to /ws without a ticket")
        ticket = await jobs.ticket(who.tenant, who.key_id)
        return {"ticket": ticket, "expiresInSeconds": TICKET_TTL_MS // 1000}, 201
