"""HTTP routes: submit, list and get jobs, health and readiness, CORS as the reference.

Handlers parse with the pure rules in validation.py and render with wire.py; every job operation
is the jobs service's (jobs.py), so no handler here touches a store for a job.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .. import storable, tenants, validation
from ..auth import Principal, Unauthorized
from ..handlers import FieldError
from ..jobs import (
    TICKET_TTL_MS,
    IdempotencyInUse,
    IdempotencyMismatch,
    JobConflict,
    JobNotFound,
    Jobs,
)
from ..limits import Limited
from ..metrics import render
from ..model import NewJob
from ..node import Busy, Node
from ..stores import StoreUnavailable
from ..stores.postgres import DataRefused
from ..wire import iso, job_json
from . import admin, dashboard, ws
from .bodies import PRINCIPAL, BodyGate, ByteBudget
from .reads import TenantReads, list_cost

log = logging.getLogger(__name__)

CORS_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")


def error(status: int, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return Response(json.dumps(body), status=status, mimetype="application/json")


def json_body_of(raw: bytes | str) -> Any:
    """A request body as JSON whose every value can be stored; Invalid says what is wrong."""
    try:
        body = storable.loads(raw)
    except storable.Malformed as exc:
        raise validation.Invalid("Malformed JSON", [FieldError("body", str(exc))]) from None
    return validation.storable_body(body)


def create_app(node: Node) -> BodyGate:
    """The node's ASGI application: the quart app behind the request-body gate."""
    app = QuartTrio("conveyor")
    app.config["MAX_CONTENT_LENGTH"] = node.config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the wire order (id first)
    config, registry = node.config, node.registry

    async def json_body() -> Any:
        return json_body_of(await request.get_data())

    @app.before_request
    async def check_request() -> None:
        """Query and path parameters must be storable text; a body is read here, so that one
        over the limit is a 413 on every route and none is left unread on the connection."""
        validation.storable_params(request.args.items(multi=True), "query")
        validation.storable_params(((k, str(v)) for k, v in (request.view_args or {}).items()), "path")
        if request.content_length or request.headers.get("Transfer-Encoding"):
            await request.get_data()

    @app.after_request
    async def cors(response: Response) -> Response:
        response.headers["Access-Control-Allow-Origin"] = "*"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            asked = request.headers.get("Access-Control-Request-Headers")
            if asked:
                response.headers["Access-Control-Allow-Headers"] = asked
                response.headers["Vary"] = "Access-Control-Request-Headers"
            response.status_code = 204
            response.set_data(b"")
        return response

    @app.errorhandler(validation.Invalid)
    async def invalid(exc: validation.Invalid) -> Response:
        return Response(json.dumps(exc.as_json()), status=400, mimetype="application/json")

    @app.errorhandler(Unauthorized)
    async def unauthorized(exc: Unauthorized) -> Response:
        node.metrics.inc("conveyor_auth_failures_total")
        response = error(401, f"Unauthorized: {exc}")
        response.headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
        return response

    @app.errorhandler(validation.Forbidden)
    async def forbidden(exc: validation.Forbidden) -> Response:
        return error(403, f"Forbidden: {exc}")

    @app.errorhandler(Limited)
    async def limited(exc: Limited) -> Response:
        response = error(429, str(exc))
        if exc.retry_after_ms is not None:
            response.headers["Retry-After"] = str(max(1, -(-exc.retry_after_ms // 1000)))
        return response

    @app.errorhandler(tenants.NotFound)
    async def not_found(exc: tenants.NotFound) -> Response:
        return error(404, str(exc))

    @app.errorhandler(tenants.Conflict)
    async def conflict(exc: tenants.Conflict) -> Response:
        return error(409, str(exc))

    @app.errorhandler(JobNotFound)
    async def job_not_found(exc: JobNotFound) -> Response:
        return error(404, str(exc))

    @app.errorhandler(JobConflict)
    @app.errorhandler(IdempotencyInUse)
    async def job_conflict(exc: Exception) -> Response:
        return error(409, str(exc))

    @app.errorhandler(IdempotencyMismatch)
    async def idempotency_mismatch(exc: IdempotencyMismatch) -> Response:
        return error(422, str(exc))

    @app.errorhandler(DataRefused)
    async def refused(exc: DataRefused) -> Response:
        # a value the rules let through and PostgreSQL did not: the caller's input, not an outage
        log.warning("400: %s", exc)
        return error(400, "Validation failed", [{"field": "request", "message": f"cannot be stored: {exc}"}])

    @app.errorhandler(StoreUnavailable)
    async def unavailable(exc: StoreUnavailable) -> Response:
        log.warning("503: %s", exc)
        return error(503, "Storage unavailable, try again later")

    @app.errorhandler(Busy)
    async def busy(exc: Busy) -> Response:
        response = error(503, f"Service busy: {exc}")
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(trio.TooSlowError)
    async def too_slow(exc: trio.TooSlowError) -> Response:
        return error(503, "Timed out waiting for storage, try again later")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        messages = {413: f"Request body too large (limit {config.max_body_bytes} bytes)"}
        response = error(exc.code or 500, messages.get(exc.code or 0, exc.name))
        if exc.code == 413:
            # the rest of the body was not read: this connection cannot carry another request
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def crash(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error(500, "Internal server error")

    async def caller() -> Principal:
        """The authenticated caller (tenant None when auth is off); raises Unauthorized."""
        checked = request.scope.get(PRINCIPAL)
        if isinstance(checked, Principal):
            return checked  # authenticated by the body gate
        return await node.auth.from_header(request.headers.get("Authorization"))

    tenant_reads = TenantReads(node.limits.of, node.metrics)
    job_ops = Jobs(config, node.pg, node.redis, node.submit)

    @asynccontextmanager
    async def reading(cost: int = 1, who: Principal | None = None) -> AsyncIterator[Principal]:
        """Within: a read by the caller (authenticated here unless given), within its tenant's
        bounds on this node (reads.py)."""
        who = who or await caller()
        if who.tenant is None:
            yield who
        else:
            async with tenant_reads.read(who.tenant, cost):
                yield who

    async def submit(who: Principal, jobs: list[NewJob], answer: dict[str, Any]) -> Any:
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
        done = await job_ops.submit(who.tenant or jobs[0].tenant_id, jobs, answer, idempotency)
        if done.replayed:
            return done.answer, 201, {"Idempotent-Replayed": "true"}
        return done.answer, 201

    @app.post("/jobs")
    async def create_job() -> Any:
        who = await caller()
        job = validation.parse_submission(await json_body(), registry, config, who.tenant)
        return await submit(who, [job], {"jobId": job.id})

    @app.post("/jobs/batch")
    async def create_jobs() -> Any:
        who = await caller()
        jobs = validation.parse_batch(await json_body(), registry, config, who.tenant)
        return await submit(who, jobs, {"jobIds": [job.id for job in jobs]})

    @app.post("/jobs/<job_id>/cancel")
    async def cancel_job(job_id: str) -> Any:
        who = await caller()
        done = await job_ops.cancel(job_id, who.tenant)
        if done.requested:  # running: its node stops it, and the feed carries the end
            return {**job_json(done.row), "cancelRequested": True}, 202
        return job_json(done.row)

    @app.post("/jobs/<job_id>/retry")
    async def retry_job(job_id: str) -> Any:
        who = await caller()
        body = await json_body() if (await request.get_data()).strip() else {}
        budget = body.get("maxAttempts", config.max_attempts) if isinstance(body, dict) else None
        if budget is None or not validation.is_int_in(budget, 1, validation.MAX_ATTEMPTS_LIMIT):
            raise validation.Invalid("Validation failed", [FieldError(
                "maxAttempts", f"must be an integer from 1 to {validation.MAX_ATTEMPTS_LIMIT}")])
        return job_json(await job_ops.retry(job_id, who.tenant, budget))

    @app.get("/jobs")
    async def list_jobs() -> Any:
        who = await caller()
        tenant, status, job_type, limit, offset = validation.parse_list_query(request.args, who.tenant)
        async with reading(list_cost(limit), who):
            rows, total = await job_ops.page(tenant, status, limit, offset, job_type)
        return {"jobs": [job_json(r) for r in rows], "total": total}

    @app.get("/jobs/<job_id>")
    async def get_job(job_id: str) -> Any:
        async with reading() as who:
            # another tenant's job is answered exactly as one that does not exist
            row = await job_ops.get(job_id, who.tenant)
        return job_json(row)

    @app.post("/ws/tickets")
    async def create_ticket() -> Any:
        who = await caller()
        if who.tenant is None or who.key_id is None:
            return error(404, "auth is off on this node: connect to /ws without a ticket")
        ticket = await job_ops.ticket(who.tenant, who.key_id)
        return {"ticket": ticket, "expiresInSeconds": TICKET_TTL_MS // 1000}, 201

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "timestamp": iso(datetime.now(UTC))}

    @app.get("/metrics")
    async def metrics() -> Any:
        return Response(
            render(node.samples()), mimetype="text/plain", content_type="text/plain; version=0.0.4"
        )

    @app.get("/health/ready")
    async def ready() -> Any:
        checks: dict[str, Any] = {}
        for name, ping in (("postgres", node.pg.ping), ("redis", node.redis.ping)):
            try:
                with trio.fail_after(2):
                    await ping()
                checks[name] = {"ok": True}
            except (StoreUnavailable, trio.TooSlowError) as exc:
                checks[name] = {"ok": False, "error": str(exc) or "timed out"}
        tree_ok = node.tree is not None and node.tree.healthy()
        ok = all(c["ok"] for c in checks.values()) and tree_ok and not node.draining.is_set()
        body = {
            "status": "ready" if ok else "unavailable",
            "timestamp": iso(datetime.now(UTC)),
            "checks": checks,
            **node.status(),
        }
        return body, 200 if ok else 503

    ws.register(app, node)
    admin.register(app, node, json_body)
    dashboard.register(app, node, caller, reading, job_ops)
    budget = ByteBudget(
        config.body_budget_bytes,
        max(config.body_budget_bytes // 4, config.max_body_bytes) if config.auth else config.body_budget_bytes,
    )
    node.body_budget = budget
    return BodyGate(app, budget, node.auth, node.metrics, config.max_body_bytes)
