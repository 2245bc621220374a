"""Every error answer of the HTTP API: one body shape, {"error": message[, "details": [...]]},
built by `error`, and the mapping from the exceptions below the web layer to status codes."""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .. import tenants, validation
from ..auth import Unauthorized
from ..failures import Busy, DataRefused, StoreUnavailable
from ..jobs import IdempotencyInUse, IdempotencyMismatch, JobConflict, JobNotFound
from ..limits import Limited
from ..metrics import Metrics
from ..scheduling import ScheduleNotFound, TooManySchedules

log = logging.getLogger(__name__)

# answers that are a status and the exception's message
STATUS_OF: dict[type[Exception], int] = {
    tenants.NotFound: 404,
    JobNotFound: 404,
    ScheduleNotFound: 404,
    TooManySchedules: 409,
    tenants.Conflict: 409,
    JobConflict: 409,
    IdempotencyInUse: 409,
    IdempotencyMismatch: 422,
}


def error_body(message: str, details: list[dict[str, Any]] | None = None) -> str:
    """The JSON of every error answer (the body gate sends it without quart)."""
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return json.dumps(body)


def error(status: int, message: str, details: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message, details), status=status, mimetype="application/json", headers=headers)


def register(app: QuartTrio, metrics: Metrics, max_body_bytes: int) -> None:
    """Map what the layers below raise to answers; anything else is a logged 500."""

    @app.errorhandler(validation.Invalid)
    async def invalid(exc: validation.Invalid) -> Response:
        return error(400, exc.message, [d.as_json() for d in exc.details])

    @app.errorhandler(Unauthorized)
    async def unauthorized(exc: Unauthorized) -> Response:
        metrics.inc("conveyor_auth_failures_total")
        return error(401, f"Unauthorized: {exc}", headers={"WWW-Authenticate": 'Bearer realm="conveyor"'})

    @app.errorhandler(validation.Forbidden)
    async def forbidden(exc: validation.Forbidden) -> Response:
        return error(403, f"Forbidden: {exc}")

    @app.errorhandler(Limited)
    async def limited(exc: Limited) -> Response:
        after = {} if exc.retry_after_ms is None else {"Retry-After": str(max(1, -(-exc.retry_after_ms // 1000)))}
        return error(429, str(exc), headers=after)

    for kind, status in STATUS_OF.items():
        app.register_error_handler(kind, _answer_with(status))

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
        return error(503, f"Service busy: {exc}", headers={"Retry-After": "1"})

    @app.errorhandler(trio.TooSlowError)
    async def too_slow(exc: trio.TooSlowError) -> Response:
        return error(503, "Timed out waiting for storage, try again later")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            # the rest of the body was not read: this connection cannot carry another request
            return error(413, f"Request body too large (limit {max_body_bytes} bytes)", headers={"Connection": "close"})
        return error(exc.code or 500, exc.name)

    @app.errorhandler(Exception)
    async def crash(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error(500, "Internal server error")


def _answer_with(status: int) -> Any:
    async def answer(exc: Exception) -> Response:
        return error(status, str(exc))

    return answer
