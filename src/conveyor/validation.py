"""Validation of API input: submissions and list queries, as the reference's schemas and more.

Pure: takes decoded JSON or query strings, returns a value or a list of FieldErrors naming the
field. Nothing here touches a store; a rejected request has cost nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from . import keys, paging, schedules, storable
from .config import Config
from .handlers import FieldError, Registry
from .model import PRIORITY_DEFAULT, NewJob, Status, new_ids

MAX_BATCH = 1000
MAX_TIMEOUT_MS = 24 * 3600 * 1000
MAX_ATTEMPTS_LIMIT = 100
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, LIST_OFFSET_MAX = 20, 100, 10_000_000  # GET /jobs
MAX_DELAY_MS = 366 * 24 * 3600 * 1000  # delayMs, and how far ahead a runAt may be
PRIORITY_MOST_URGENT, PRIORITY_LEAST_URGENT = 0, 9
RUN_AT_CHARS = 64


class Invalid(Exception):
    def __init__(self, message: str, details: list[FieldError]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Forbidden(Exception):
    """The request names a tenant other than the caller's (403)."""


def _own_tenant(value: Any, tenant: str, field: str, errors: list[FieldError]) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        errors.append(FieldError(field, keys.TENANT_ID_RULE))
    elif value != tenant:
        shown = value if len(value) <= 100 else value[:100] + "…"
        raise Forbidden(f"{field} {shown!r} is not the tenant of this API key")


def storable_body(body: Any) -> Any:
    """A decoded JSON body, once every value in it can be stored; Invalid names the first one
    that cannot (`jobs[3].payload.x`)."""
    found = storable.problem(body)
    if found is not None:
        raise Invalid("Validation failed", [FieldError(found[0] if found[0] != "value" else "body", found[1])])
    return body


def storable_params(params: Iterable[tuple[str, str]], what: str) -> None:
    """Query or path parameters (every pair, repeated names too): names and values must be
    storable text."""
    errors = []
    for name, value in params:
        if (why := storable.text_problem(name)) is not None:
            errors.append(FieldError(f"a {what} parameter's name", why))
        elif (why := storable.text_problem(value)) is not None:
            errors.append(FieldError(name, why))
    if errors:
        raise Invalid("Validation failed", errors)


JOB_FIELDS = (  # of a submitted job
    "tenantId", "type", "payload", "maxAttempts", "timeoutMs", "priority", "delayMs", "runAt",
)


UNKNOWN_FIELDS_NAMED = 10  # a body with many unknown fields gets this many errors, not one each
FIELD_NAME_SHOWN = 100  # characters of an unknown field's name put in its error


ERRORS_LISTED = 100  # errors in one answer at most; a last one says how many more there were


def _unknown_fields(body: dict[str, Any], where: str, known: tuple[str, ...] = JOB_FIELDS,
                    what: str = "a job") -> list[FieldError]:
    unknown = [name for name in body if name not in known]
    errors = [
        FieldError(f"{where}{_shown(name)}", f"is not a field of {what} (those are {', '.join(known)})")
        for name in unknown[:UNKNOWN_FIELDS_NAMED]
    ]
    if len(unknown) > UNKNOWN_FIELDS_NAMED:
        errors.append(FieldError(where.rstrip(".") or "body",
                                 f"has {len(unknown) - UNKNOWN_FIELDS_NAMED} more fields that are not fields of {what}"))
    return errors


def _capped(errors: list[FieldError]) -> list[FieldError]:
    if len(errors) <= ERRORS_LISTED:
        return errors
    return [*errors[:ERRORS_LISTED], FieldError("body", f"has {len(errors) - ERRORS_LISTED} more errors")]


def _shown(name: str) -> str:
    return name if len(name) <= FIELD_NAME_SHOWN else f"{name[:FIELD_NAME_SHOWN]}…"


def is_int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def job_errors(
    body: Any, registry: Registry, config: Config, where: str = "", tenant: str | None = None
) -> list[FieldError]:
    """What is wrong with one job of a submission. With an authenticated tenant, tenantId may
    be left out, and naming another tenant raises Forbidden."""
    if not isinstance(body, dict):
        return [FieldError(where.rstrip(".") or "body", "must be a JSON object")]
    errors = _unknown_fields(body, where)
    if tenant is not None:
        _own_tenant(body.get("tenantId"), tenant, f"{where}tenantId", errors)
    elif not keys.valid_tenant_id(body.get("tenantId")):
        errors.append(FieldError(f"{where}tenantId", keys.TENANT_ID_RULE))
    errors += _work_errors(body, registry, where)
    errors += timing_errors(body, where)
    return errors


def _work_errors(body: dict[str, Any], registry: Registry, where: str) -> list[FieldError]:
    """What is wrong with a job's type, payload, maxAttempts and timeoutMs."""
    errors = []
    type_ = body.get("type")
    handler = registry.get(type_) if isinstance(type_, str) else None
    if handler is None:
        errors.append(FieldError(f"{where}type", f"must be one of {', '.join(registry.names())}"))
    payload = body.get("payload")
    if not isinstance(payload, dict):
        errors.append(FieldError(f"{where}payload", "must be a JSON object"))
    elif handler is not None:
        errors += [
            FieldError(f"{where}payload.{e.field}", e.message) for e in handler.validate(payload)
        ]
    if "maxAttempts" in body and not is_int_in(body["maxAttempts"], 1, MAX_ATTEMPTS_LIMIT):
        errors.append(
            FieldError(f"{where}maxAttempts", f"must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}")
        )
    if "timeoutMs" in body and not is_int_in(body["timeoutMs"], 1, MAX_TIMEOUT_MS):
        errors.append(
            FieldError(f"{where}timeoutMs", f"must be an integer from 1 to {MAX_TIMEOUT_MS}")
        )
    return errors


def timing_errors(body: Mapping[str, Any], where: str = "") -> list[FieldError]:
    """What is wrong with a job's priority, delayMs and runAt (a submission, a schedule's job)."""
    errors = []
    if "priority" in body and not is_int_in(body["priority"], PRIORITY_MOST_URGENT, PRIORITY_LEAST_URGENT):
        errors.append(FieldError(
            f"{where}priority",
            f"must be an integer from {PRIORITY_MOST_URGENT} (most urgent) to {PRIORITY_LEAST_URGENT}",
        ))
    if "delayMs" in body and "runAt" in body:
        errors.append(FieldError(f"{where}runAt", "cannot be given together with delayMs"))
    elif "delayMs" in body and not is_int_in(body["delayMs"], 0, MAX_DELAY_MS):
        errors.append(FieldError(f"{where}delayMs", f"must be an integer from 0 to {MAX_DELAY_MS}"))
    elif "runAt" in body and isinstance(why := run_at_problem(body["runAt"]), str):
        errors.append(FieldError(f"{where}runAt", why))
    return errors


def run_at_problem(value: Any, now: datetime | None = None) -> str | datetime:
    """A runAt as a UTC datetime, or what is wrong with it."""
    when = _run_at(value)
    if when is None:
        return "must be an ISO 8601 date and time with an offset, like 2026-12-24T18:00:00+01:00"
    if when - (now or datetime.now(UTC)) > timedelta(milliseconds=MAX_DELAY_MS):
        return f"must be at most {MAX_DELAY_MS // 86_400_000} days ahead"
    return when


def _run_at(value: Any) -> datetime | None:
    """ISO 8601 text with an offset as a UTC datetime; None when it is not that."""
    if not isinstance(value, str) or len(value) > RUN_AT_CHARS:
        return None
    try:
        when = datetime.fromisoformat(value)
        return when.astimezone(UTC) if when.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def new_job(
    body: dict[str, Any], registry: Registry, config: Config, tenant: str | None = None,
    job_id: str | None = None,
) -> NewJob:
    """Build a NewJob from a body that job_errors accepted."""
    handler = registry.get(body["type"])
    assert handler is not None
    return NewJob(
        id=job_id or str(uuid.uuid4()),
        tenant_id=tenant or body["tenantId"],
        type=body["type"],
        payload=body["payload"],
        max_attempts=body.get("maxAttempts", config.max_attempts),
        timeout_ms=body.get("timeoutMs") or handler.default_timeout_ms(body["payload"]),
        priority=body.get("priority", PRIORITY_DEFAULT),
        delay_ms=body.get("delayMs", 0),
        run_at=_run_at(body.get("runAt")),  # checked by job_errors (its bound, once)
    )


@attrs.frozen
class ScheduleDef:
    """A schedule as PUT /schedules/{name} defines it, validated."""

    tenant: str
    name: str
    timing: schedules.Timing
    job: dict[str, Any]  # type, payload and the options given (a schedule's JOB_FIELDS)
    paused: bool


def parse_schedule(
    name: str, body: Any, registry: Registry, now: datetime, tenant: str | None = None
) -> ScheduleDef:
    """A schedule from PUT /schedules/{name}; Invalid names every field that is wrong, and
    naming another tenant raises Forbidden."""
    if not isinstance(body, dict):
        raise Invalid("Validation failed", [FieldError("body", "must be a JSON object")])
    errors = _unknown_fields(body, "", schedules.SCHEDULE_FIELDS, "a schedule")
    if not schedules.NAME_RE.fullmatch(name):
        errors.append(FieldError("name", schedules.NAME_RULE))
    if tenant is not None:
        _own_tenant(body.get("tenantId"), tenant, "tenantId", errors)
    elif not keys.valid_tenant_id(body.get("tenantId")):
        errors.append(FieldError("tenantId", keys.TENANT_ID_RULE))
    errors += schedules.timing_errors(body)
    if "paused" in body and not isinstance(body["paused"], bool):
        errors.append(FieldError("paused", "must be true or false"))
    job = body.get("job")
    if not isinstance(job, dict):
        errors.append(FieldError("job", "must be a JSON object: {type, payload, maxAttempts?, timeoutMs?, priority?}"))
    else:
        errors += _unknown_fields(job, "job.", schedules.JOB_FIELDS, "a schedule's job")
        errors += _work_errors(job, registry, "job.")
        errors += timing_errors({k: v for k, v in job.items() if k == "priority"}, "job.")
    if errors:
        raise Invalid("Validation failed", _capped(errors))
    assert isinstance(job, dict)
    return ScheduleDef(
        tenant=tenant or body["tenantId"], name=name, timing=schedules.timing_of(body, now),
        job={k: job[k] for k in schedules.JOB_FIELDS if k in job}, paused=body.get("paused", False),
    )


def scheduled_job(
    tenant: str, name: str, job: dict[str, Any], scheduled_for: datetime, registry: Registry, config: Config
) -> NewJob | None:
    """The job a schedule's fire makes (None: its job no longer validates, as when its type is
    gone from the node's handlers)."""
    if _work_errors(job, registry, "job.") or timing_errors({k: v for k, v in job.items() if k == "priority"}):
        return None
    made = new_job({**job, "tenantId": tenant}, registry, config, tenant)
    return attrs.evolve(made, schedule_name=name, scheduled_for=scheduled_for)


def parse_submission(
    body: Any, registry: Registry, config: Config, tenant: str | None = None
) -> NewJob:
    errors = job_errors(body, registry, config, tenant=tenant)
    if errors:
        raise Invalid("Validation failed", _capped(errors))
    return new_job(body, registry, config, tenant)


BATCH_STEP = 50  # jobs of a batch checked (or built) between two yields of parse_batch_in_steps


def parse_batch_in_steps(
    body: Any, registry: Registry, config: Config, tenant: str | None = None
) -> Generator[None, None, list[NewJob]]:
    """parse_batch, yielding after every BATCH_STEP jobs checked or built: a caller on an event
    loop (jobs.stepped) lets other requests run between the steps of a 1,000-job batch (about
    11 ms of work in one piece otherwise). Pure: the yields carry nothing."""
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_BATCH:
        raise Invalid(
            "Validation failed", [FieldError("jobs", f"must be an array of 1-{MAX_BATCH} jobs")]
        )
    errors = _unknown_fields(body, "", ("jobs",), "a batch")
    for i, item in enumerate(jobs):
        if i and not i % BATCH_STEP:
            yield
        errors += job_errors(item, registry, config, where=f"jobs[{i}].", tenant=tenant)
    if errors:
        raise Invalid("Validation failed", _capped(errors))
    made = []
    for i, (item, job_id) in enumerate(zip(jobs, new_ids(len(jobs)), strict=True)):
        if i and not i % BATCH_STEP:
            yield
        made.append(new_job(item, registry, config, tenant, job_id))
    return made


def parse_batch(
    body: Any, registry: Registry, config: Config, tenant: str | None = None
) -> list[NewJob]:
    """The jobs of POST /jobs/batch; Invalid names every field that is wrong (capped)."""
    steps = parse_batch_in_steps(body, registry, config, tenant)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@attrs.frozen
class ListQuery:
    """What GET /jobs asks for: a tenant's jobs, newest first, filtered, from an offset or after
    a cursor's job."""

    tenant: str
    status: str | None = None
    type: str | None = None
    limit: int = LIST_LIMIT_DEFAULT
    offset: int = 0
    after: tuple[datetime, str] | None = None  # (created_at, id) of the previous page's last job


def parse_list_query(args: Mapping[str, str], tenant: str | None = None) -> ListQuery:
    """tenantId, status, type, limit, offset or cursor of GET /jobs; the caller's tenant when
    authenticated."""
    errors: list[FieldError] = []
    tenant = _query_tenant(args, tenant, errors)
    status = args.get("status") or None
    if status is not None and status not in Status.__members__:
        errors.append(FieldError("status", f"must be one of {', '.join(Status.__members__)}"))
    job_type = args.get("type") or None
    if job_type is not None and len(job_type) > 100:
        errors.append(FieldError("type", "must be at most 100 characters"))
    elif job_type is not None and (why := storable.text_problem(job_type)) is not None:
        errors.append(FieldError("type", why))
    limit = _query_int(args, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX, errors)
    offset = _query_int(args, "offset", 0, 0, LIST_OFFSET_MAX, errors)
    after = None
    if args.get("cursor"):
        after = paging.decode(args["cursor"])
        if after is None:
            errors.append(FieldError("cursor", "is not a cursor of this list (use a page's nextCursor as it is)"))
        elif offset:
            errors.append(FieldError("offset", "cannot be given together with cursor"))
    if errors:
        raise Invalid("Validation failed", errors)
    return ListQuery(tenant, status, job_type, limit, offset, after)


def parse_tenant_query(args: Mapping[str, str], tenant: str | None) -> str:
    """The tenant a read is about: the key's (naming another is 403), or with auth off the
    tenantId query parameter."""
    errors: list[FieldError] = []
    tenant = _query_tenant(args, tenant, errors)
    if errors:
        raise Invalid("Validation failed", errors)
    return tenant


def _query_tenant(args: Mapping[str, str], tenant: str | None, errors: list[FieldError]) -> str:
    if tenant is not None:
        _own_tenant(args.get("tenantId"), tenant, "tenantId", errors)
        return tenant
    named = args.get("tenantId", "")
    if not keys.valid_tenant_id(named):
        errors.append(FieldError("tenantId", f"is required, and {keys.TENANT_ID_RULE}"))
    return named


def _query_int(
    args: Mapping[str, str], name: str, default: int, low: int, high: int, errors: list[FieldError]
) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() would also take " 10", "1_0" and "１０" (full-width digits)
    value = int(raw) if raw.isascii() and raw.isdigit() else None
    if value is None or not low <= value <= high:
        errors.append(FieldError(name, f"must be an integer from {low} to {high}"))
        return default
    return value


def parse_job_id(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None
