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


def answer_of(exc: Exception, metrics: Metrics, where: str) -> tuple[int, str, dict[str, str]]:
    """The status, JSON body and headers that answer an exception raised below the web layer
    (by quart's error handler and by the routes that answer without quart, fastpath.py); any
    other exception is a 500, logged with its traceback (call it where that is handled), `where`
    naming the request."""
    if isinstance(exc, validation.Invalid):
        return 400, error_body(exc.message, [d.as_json() for d in exc.details]), {}
    if isinstance(exc, Unauthorized):
        metrics.inc("conveyor_auth_failures_total")
        return 401, error_body(f"Unauthorized: {exc}"), {"WWW-Authenticate": 'Bearer realm="conveyor"'}
    if isinstance(exc, validation.Forbidden):
        return 403, error_body(f"Forbidden: {exc}"), {}
    if isinstance(exc, Limited):
        after = {} if exc.retry_after_ms is None else {"Retry-After": str(max(1, -(-exc.retry_after_ms // 1000)))}
        return 429, error_body(str(exc)), after
    for kind, status in STATUS_OF.items():
        if isinstance(exc, kind):
            return status, error_body(str(exc)), {}
    if isinstance(exc, DataRefused):
        # a value the rules let through and PostgreSQL did not: the caller's input, not an outage
        log.warning("400: %s", exc)
        return 400, error_body("Validation failed", [{"field": "request", "message": f"cannot be stored: {exc}"}]), {}
    if isinstance(exc, StoreUnavailable):
        log.warning("503: %s", exc)
        return 503, error_body("Storage unavailable, try again later"), {}
    if isinstance(exc, Busy):
        return 503, error_body(f"Service busy: {exc}"), {"Retry-After": "1"}
    if isinstance(exc, trio.TooSlowError):
        return 503, error_body("Timed out waiting for storage, try again later"), {}
    log.exception("unhandled error in %s", where)
    return 500, error_body("Internal server error"), {}


def register(app: QuartTrio, metrics: Metrics, max_body_bytes: int) -> None:
    """Map what the layers below raise to answers (answer_of); anything else is a logged 500."""

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            # the rest of the body was not read: this connection cannot carry another request
            return error(413, f"Request body too large (limit {max_body_bytes} bytes)", headers={"Connection": "close"})
        return error(exc.code or 500, exc.name)

    @app.errorhandler(Exception)
    async def answer(exc: Exception) -> Response:
        status, body, headers = answer_of(exc, metrics, f"{request.method} {request.path}")
        return Response(body, status=status, mimetype="application/json", headers=headers)
