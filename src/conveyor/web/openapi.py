"""The OpenAPI 3.1 document of the HTTP API, served at /openapi.json.

It is built from the rules the routes use (validation's fields and bounds, the registry's job
types, limits.FIELDS, the Status enum), so a bound changed there changes here. A unit test checks
that it names every route of the app, and CI runs schemathesis against a live node from it, which
checks each answer's status, content type and body against what this document says.

The WebSocket feed (/ws) and the dashboard's files are not in it (OpenAPI does not describe a
WebSocket protocol; docs/api.md does).
"""

from __future__ import annotations

from typing import Any

from .. import history, keys, limits, paging, schedules, validation
from ..handlers import Registry
from ..model import PRIORITY_DEFAULT, Status
from ..tenants import MAX_KEY_NAME

NOT_DESCRIBED = ("/", "/dashboard/<name>", "/ws")  # routes that are not JSON over HTTP

ERRORS = {
    400: "Bad input: `details` names each field that is wrong",
    401: "No API key, or one that is unknown, wrong or revoked",
    403: "The key's tenant may not act for the tenant named",
    404: "No such job or tenant, or one of another tenant",
    409: "The job's or tenant's state does not allow it",
    413: "The request body is over the node's limit",
    422: "The Idempotency-Key was used for a different request",
    429: "Over the tenant's rate or limit; Retry-After says when to try again",
    503: "Storage is unavailable or the node is busy; try again (Retry-After)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


def _object(required: tuple[str, ...], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """An object with no other fields (they are refused with a 400)."""
    return {**schema, "additionalProperties": False}


def _int(low: int, high: int | None = None) -> dict[str, Any]:
    return {"type": "integer", "minimum": low} | ({} if high is None else {"maximum": high})


TENANT_ID = {"type": "string", "pattern": f"^{keys.TENANT_ID_RE.pattern}$", "description": keys.TENANT_ID_RULE}
TIME = {"type": "string", "format": "date-time"}


def _job_schemas(registry: Registry) -> dict[str, Any]:
    fields = {
        "tenantId": {**TENANT_ID, "description": "the key's tenant when left out (auth on); required with auth off"},
        "type": {"type": "string", "enum": registry.names()},
        "payload": {"type": "object", "description": "as the job type defines it (docs/api.md)"},
        "maxAttempts": _int(1, validation.MAX_ATTEMPTS_LIMIT),
        "timeoutMs": _int(1, validation.MAX_TIMEOUT_MS),
        "priority": _int(validation.PRIORITY_MOST_URGENT, validation.PRIORITY_LEAST_URGENT)
        | {"description": f"0 most urgent; default {PRIORITY_DEFAULT}"},
        "delayMs": _int(0, validation.MAX_DELAY_MS) | {"description": "run no earlier than this long after the submission (not with runAt)"},
        "runAt": {**TIME, "description": "run no earlier than this (ISO 8601 with an offset; not with delayMs)"},
    }
    submission = {name: fields[name] for name in validation.JOB_FIELDS}  # a new field needs a schema here
    job = _object(
        ("id", "tenantId", "type", "payload", "status", "attempts", "maxAttempts", "timeoutMs",
         "error", "result", "runAt", "createdAt", "updatedAt", "priority", "scheduleName", "scheduledFor"),
        id={"type": "string"}, tenantId={"type": "string"}, type={"type": "string"},
        payload=_nullable("object", description="null in a list when large (payloadOmitted)"),
        status={"type": "string", "enum": list(Status.__members__)},
        attempts=_int(0), maxAttempts=_int(1), timeoutMs=_int(1),
        error=_nullable("string"), result={"description": "the handler's result, any JSON; null until COMPLETED"},
        runAt=_nullable("string", format="date-time"), createdAt=TIME, updatedAt=TIME,
        payloadOmitted={"type": "boolean"}, resultOmitted={"type": "boolean"},
        priority=_int(validation.PRIORITY_MOST_URGENT, validation.PRIORITY_LEAST_URGENT),
        scheduleName=_nullable("string", description="the schedule whose fire made the job"),
        scheduledFor=_nullable("string", format="date-time", description="that fire's time"),
    )
    return {
        "JobSubmission": _closed(_object(("type", "payload"), **submission)) | {"examples": [
            {"type": "sleep", "payload": {"delayMs": 100}},
            {"type": "email", "payload": {"to": "ops@example.com", "subject": "Hi", "body": "Hello"}, "maxAttempts": 5},
        ]},
        "Batch": _closed(_object(("jobs",), jobs={
            "type": "array", "items": _ref("JobSubmission"), "minItems": 1, "maxItems": validation.MAX_BATCH})),
        "Job": job,
        "CancelAccepted": {"allOf": [_ref("Job"), _object(("cancelRequested",), cancelRequested={"const": True})]},
        "Created": _object(("jobId",), jobId={"type": "string", "format": "uuid"}),
        "BatchCreated": _object(("jobIds",), jobIds={"type": "array", "items": {"type": "string", "format": "uuid"}}),
        "JobList": _object(
            ("jobs", "total", "totalExact", "nextCursor"), jobs={"type": "array", "items": _ref("Job")},
            total=_int(0) | {"description": "exact when totalExact, else the planner's estimate"},
            totalExact={"type": "boolean"},
            nextCursor=_nullable("string", description="pass as cursor for the next page; null on the last")),
        "Retry": _object((), maxAttempts=_int(1, validation.MAX_ATTEMPTS_LIMIT)),
        "JobEvents": _object(("jobId", "events"), jobId={"type": "string"},
                             events={"type": "array", "items": {"type": "object"},
                                     "description": "the job's messages still in its tenant's feed, oldest first"}),
    }


def _other_schemas() -> dict[str, Any]:
    numbers = {wire: {"type": "integer" if kind is int else "number", "minimum": low, "maximum": limits.MAX_VALUE}
               for wire, (_, kind, low) in limits.FIELDS.items()}
    overrides = {wire: {**schema, "type": [schema["type"], "null"]} for wire, schema in numbers.items()}
    key = _object(("id", "tenantId", "name", "createdAt", "revokedAt"), id={"type": "string"},
                  tenantId={"type": "string"}, name={"type": "string"}, createdAt=TIME,
                  revokedAt=_nullable("string", format="date-time"))
    return {
        "Error": _object(("error",), error={"type": "string"}, details={"type": "array", "items": _object(
            ("field", "message"), field={"type": "string"}, message={"type": "string"})}),
        "Ticket": _object(("ticket", "expiresInSeconds"), ticket={"type": "string"}, expiresInSeconds=_int(1)),
        "Stats": _object(("tenantId", "unfinished", "running", "waiting"), tenantId={"type": "string"},
                         unfinished=_int(0), running=_int(0), waiting=_int(0)),
        "History": _object(
            ("tenantId", "slotSeconds", "from", "completed", "failed", "unfinished", "running"),
            tenantId={"type": "string"}, slotSeconds=_int(1), **{"from": _int(0)},
            completed=_counts(), failed=_counts(), unfinished=_counts(nullable=True), running=_counts(nullable=True)),
        "JobTypes": _object(("types",), types={"type": "array", "items": {"type": "string"}}),
        "Health": _object(("status", "timestamp"), status={"const": "ok"}, timestamp=TIME),
        "Ready": _object(("status", "timestamp", "checks"), status={"enum": ["ready", "unavailable"]},
                         timestamp=TIME, checks={"type": "object"}),
        "Limits": _object(tuple(numbers), **numbers),
        "LimitOverrides": _closed(_object((), **overrides)),
        "NewTenant": _closed(_object(("id",), id=TENANT_ID, **overrides)),
        "Tenant": _object(("id", "limits", "overrides", "createdAt"), id={"type": "string"}, limits=_ref("Limits"),
                          overrides={"type": "object"}, createdAt=TIME, activeKeys=_int(0)),
        "TenantList": _object(("tenants",), tenants={"type": "array", "items": _ref("Tenant")}),
        "KeyRequest": _object((), name={"type": "string", "maxLength": MAX_KEY_NAME}),
        "Key": key,
        "NewKey": {"allOf": [_ref("Key"), _object(("key",), key={"type": "string", "description": "shown once"})]},
        "KeyList": _object(("keys",), keys={"type": "array", "items": _ref("Key")}),
    }


def _op(summary: str, ok: dict[int, tuple[str, dict[str, Any]]], errors: tuple[int, ...], *,
        body: str | None = None, body_required: bool = True, params: tuple[dict[str, Any], ...] = (),
        security: str | None = "apiKey") -> dict[str, Any]:
    """One operation: its answers (status -> description, body), the error answers it may give."""
    responses: dict[str, Any] = {str(s): {"description": d, **_json(schema)} for s, (d, schema) in ok.items()}
    responses |= {str(s): {"$ref": f"#/components/responses/E{s}"} for s in errors}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {"required": body_required, **_json(_ref(body))}
    if security == "apiKey":
        op["security"] = [{"apiKey": []}, {}]  # {}: with auth off no key is needed
    elif security == "adminKey":
        op["security"] = [{"adminKey": []}]
    return op


def _counts(nullable: bool = False) -> dict[str, Any]:
    """A column of the history, a slot per item; depths are null before any was recorded."""
    return {"type": "array", "items": {"type": ["integer", "null"] if nullable else "integer", "minimum": 0},
            "minItems": history.SLOTS, "maxItems": history.SLOTS}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TENANT_QUERY = _query("tenantId", TENANT_ID, "the key's tenant when left out (auth on); required with auth off")
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
               "description": "the same key and body within a day answers the first request's jobs again"}
JOB_ID = _path_param("jobId")


def _job_paths() -> dict[str, Any]:
    body_errors = (400, 401, 403, 413, 429, 503)
    listing = (TENANT_QUERY, _query("status", {"type": "string", "enum": list(Status.__members__)}),
               _query("type", {"type": "string", "maxLength": 100}),
               _query("limit", _int(1, validation.LIST_LIMIT_MAX), f"default {validation.LIST_LIMIT_DEFAULT}"),
               _query("offset", _int(0, validation.LIST_OFFSET_MAX)),
               _query("cursor", {"type": "string", "maxLength": paging.MAX_CURSOR_CHARS},
                      "a page's nextCursor: the page after it (not with offset)"))
    return {
        "/jobs": {
            "post": _op("Submit a job", {201: ("Stored and queued", _ref("Created"))}, (*body_errors, 409, 422),
                        body="JobSubmission", params=(IDEMPOTENCY,)),
            "get": _op("List the tenant's jobs, newest first", {200: ("A page", _ref("JobList"))},
                       (400, 401, 403, 429, 503), params=listing),
        },
        "/jobs/batch": {"post": _op("Submit jobs together (all or none)", {201: ("Stored", _ref("BatchCreated"))},
                                    (*body_errors, 409, 422), body="Batch", params=(IDEMPOTENCY,))},
        "/jobs/{jobId}": {"get": _op("A job", {200: ("The job", _ref("Job"))}, (400, 401, 404, 429, 503),
                                     params=(JOB_ID,))},
        "/jobs/{jobId}/cancel": {"post": _op(
            "Cancel a PENDING or RUNNING job",
            {200: ("Cancelled", _ref("Job")), 202: ("Running: its node stops it", _ref("CancelAccepted"))},
            (400, 401, 404, 409, 413, 503), params=(JOB_ID,))},
        "/jobs/{jobId}/retry": {"post": _op(
            "Run a FAILED or CANCELLED job again", {200: ("Queued again", _ref("Job"))},
            (400, 401, 404, 409, 413, 503), body="Retry", body_required=False, params=(JOB_ID,))},
        "/jobs/{jobId}/events": {"get": _op(
            "A job's events still in the feed", {200: ("Its events", _ref("JobEvents"))},
            (400, 401, 404, 429, 503), params=(JOB_ID,))},
        "/ws/tickets": {"post": _op("A one-use ticket for /ws?ticket=…", {201: ("The ticket", _ref("Ticket"))},
                                    (400, 401, 404, 413, 503))},
        "/stats": {"get": _op("The tenant's queue depth", {200: ("Now", _ref("Stats"))}, (400, 401, 403, 429, 503),
                              params=(TENANT_QUERY,))},
        "/stats/history": {"get": _op(
            "The tenant's last hour, in slots (oldest first) of `slotSeconds` from `from` (ms since the epoch)",
            {200: ("Its history", _ref("History"))}, (400, 401, 403, 429, 503), params=(TENANT_QUERY,))},
        "/job-types": {"get": _op("The job types this node runs", {200: ("Their names", _ref("JobTypes"))},
                                  (400, 401, 503))},
    }


def _schedule_schemas(registry: Registry) -> dict[str, Any]:
    job = _closed(_object(
        ("type", "payload"), type={"type": "string", "enum": registry.names()},
        payload={"type": "object", "description": "as the job type defines it (docs/api.md)"},
        maxAttempts=_int(1, validation.MAX_ATTEMPTS_LIMIT), timeoutMs=_int(1, validation.MAX_TIMEOUT_MS),
        priority=_int(validation.PRIORITY_MOST_URGENT, validation.PRIORITY_LEAST_URGENT)))
    timing = {
        "cron": {"type": "string", "maxLength": schedules.CRON_CHARS,
                 "description": "five fields: minute hour day-of-month month day-of-week (not with every)"},
        "every": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d))+$",
                  "description": "a duration like 30s, 5m, 1h30m; at least 1 s (not with cron)"},
        "timezone": {"type": "string", "maxLength": schedules.TIMEZONE_CHARS,
                     "description": "IANA name for cron; default UTC"},
    }
    return {
        "ScheduleDefinition": _closed(_object(
            ("job",), tenantId={**TENANT_ID, "description": "the key's tenant when left out (auth on)"}, **timing,
            job=job, paused={"type": "boolean"})) | {"examples": [
                {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris", "job": {"type": "sleep", "payload": {"delayMs": 10}}},
                {"every": "30s", "job": {"type": "sleep", "payload": {"delayMs": 0}, "priority": 8}},
            ]},
        "Schedule": _object(
            ("name", "tenantId", "cron", "every", "timezone", "job", "paused", "nextFireAt", "lastFireAt",
             "lastJobId", "createdAt", "updatedAt"),
            name={"type": "string"}, tenantId={"type": "string"}, cron=_nullable("string"), every=_nullable("string"),
            timezone={"type": "string"}, job={"type": "object"}, paused={"type": "boolean"},
            nextFireAt=_nullable("string", format="date-time", description="null while paused"),
            lastFireAt=_nullable("string", format="date-time"), lastJobId=_nullable("string"),
            createdAt=TIME, updatedAt=TIME),
        "ScheduleList": _object(("schedules",), schedules={"type": "array", "items": _ref("Schedule")}),
    }


def _schedule_paths() -> dict[str, Any]:
    name = {**_path_param("name"), "schema": {"type": "string", "pattern": f"^{schedules.NAME_RE.pattern}$"}}
    one = (name, TENANT_QUERY)
    deleted = {"summary": "Delete a schedule: no fire after this", "parameters": list(one),
               "security": [{"apiKey": []}, {}],
               "responses": {"204": {"description": "Deleted"},
                             **{str(s): {"$ref": f"#/components/responses/E{s}"} for s in (400, 401, 403, 404, 503)}}}
    return {
        "/schedules": {"get": _op("The tenant's schedules, by name", {200: ("Its schedules", _ref("ScheduleList"))},
                                  (400, 401, 403, 429, 503), params=(TENANT_QUERY,))},
        "/schedules/{name}": {
            "put": _op("Create or replace a schedule", {201: ("Created", _ref("Schedule")), 200: ("Replaced", _ref("Schedule"))},
                       (400, 401, 403, 409, 413, 503), body="ScheduleDefinition", params=(name,)),
            "get": _op("A schedule", {200: ("The schedule", _ref("Schedule"))}, (400, 401, 403, 404, 429, 503), params=one),
            "delete": deleted,
        },
        "/schedules/{name}/pause": {"post": _op("Pause: no fires until resumed", {200: ("Paused", _ref("Schedule"))},
                                                (400, 401, 403, 404, 413, 503), params=one)},
        "/schedules/{name}/resume": {"post": _op(
            "Resume from the next fire after now (fires missed while paused are not made)",
            {200: ("Resumed", _ref("Schedule"))}, (400, 401, 403, 404, 413, 503), params=one)},
    }


def _admin_paths() -> dict[str, Any]:
    tenant, key_id = _path_param("tenant"), _path_param("keyId")
    common = (400, 401, 404, 413, 503)  # 404 on every route when the admin API is disabled
    return {
        "/admin/tenants": {
            "post": _op("Create a tenant", {201: ("Created", _ref("Tenant"))}, (*common, 409),
                        body="NewTenant", security="adminKey"),
            "get": _op("All tenants", {200: ("The tenants", _ref("TenantList"))}, common, security="adminKey"),
        },
        "/admin/tenants/{tenant}": {"patch": _op(
            "Change a tenant's limits (null: back to the default)", {200: ("Changed", _ref("Tenant"))}, common,
            body="LimitOverrides", params=(tenant,), security="adminKey")},
        "/admin/tenants/{tenant}/keys": {
            "post": _op("A new API key (shown once)", {201: ("Created", _ref("NewKey"))}, common,
                        body="KeyRequest", body_required=False, params=(tenant,), security="adminKey"),
            "get": _op("The tenant's keys", {200: ("Its keys", _ref("KeyList"))}, common,
                       params=(tenant,), security="adminKey"),
        },
        "/admin/tenants/{tenant}/keys/{keyId}/revoke": {"post": _op(
            "Revoke a key, on every node within the auth refresh", {200: ("Revoked", _ref("Key"))}, common,
            params=(tenant, key_id), security="adminKey")},
    }


def _node_paths() -> dict[str, Any]:
    metrics = {"description": "Prometheus text format",
               "content": {"text/plain": {"schema": {"type": "string"}}}}
    ready = _op("Readiness", {200: ("Ready", _ref("Ready")), 503: ("Not ready", _ref("Ready"))}, (400,),
                security=None)
    return {
        "/health": {"get": _op("Liveness", {200: ("Alive", _ref("Health"))}, (400,), security=None)},
        "/health/ready": {"get": ready},
        "/metrics": {"get": {"summary": "Metrics", "responses": {"200": metrics, "400": {"$ref": "#/components/responses/E400"}}}},
        "/openapi.json": {"get": _op("This document", {200: ("OpenAPI 3.1", {"type": "object"})}, (400,), security=None)},
    }


def document(registry: Registry, version: str) -> dict[str, Any]:
    """The whole OpenAPI document."""
    retry_after = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    responses = {
        f"E{status}": {"description": why, **_json(_ref("Error")),
                       **({"headers": retry_after} if status in (429, 503) else {})}
        for status, why in ERRORS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "conveyor", "version": version,
                 "description": "A multi-tenant job queue. The WebSocket feed at /ws is described in docs/api.md."},
        "paths": _job_paths() | _schedule_paths() | _admin_paths() | _node_paths(),
        "components": {
            "schemas": _job_schemas(registry) | _schedule_schemas(registry) | _other_schemas(),
            "responses": responses,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "a tenant's API key (cvk_…)"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "CONVEYOR_ADMIN_KEY"},
            },
        },
    }
