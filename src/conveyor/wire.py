"""The JSON wire format: jobs and events with the reference system's camelCase names.

Pure functions from database rows to dicts; no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .model import Envelope, NewJob


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with milliseconds and a Z, as JavaScript's Date.toJSON()."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(row: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it. A list's row may leave out a large payload or result: then it
    is null and payloadOmitted / resultOmitted is true (GET /jobs/{id} has it)."""
    body = {
        "id": row["id"],
        "tenantId": row["tenant_id"],
        "type": row["type"],
        "payload": row["payload"],
        "status": row["status"],
        "attempts": row["attempts"],
        "maxAttempts": row["max_attempts"],
        "timeoutMs": row["timeout_ms"],
        "error": row["error"],
        "result": row["result"],
        "runAt": iso(row["run_at"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }
    if row.get("payload_omitted"):
        body["payloadOmitted"] = True
    if row.get("result_omitted"):
        body["resultOmitted"] = True
    return body


def job_update(row: dict[str, Any]) -> dict[str, Any]:
    """The reference's JOB_UPDATE WebSocket message, plus tenantId, attempts and timestamps."""
    return {
        "type": "JOB_UPDATE",
        "jobId": row["id"],
        "tenantId": row["tenant_id"],
        "status": row["status"],
        "error": row["error"],
        "attempts": row["attempts"],
        "maxAttempts": row["max_attempts"],
        "updatedAt": iso(row["updated_at"]),
    }


def created_events(jobs: Sequence[NewJob]) -> list[str]:
    """The PENDING events of jobs just committed, as the JSON text the feeds carry."""
    at = datetime.now(UTC)
    return [json.dumps(job_created(job, at)) for job in jobs]


def job_created(job: NewJob, at: datetime) -> dict[str, Any]:
    """The JOB_UPDATE of a job just submitted: PENDING, no attempt yet."""
    return {
        "type": "JOB_UPDATE",
        "jobId": job.id,
        "tenantId": job.tenant_id,
        "status": "PENDING",
        "error": None,
        "attempts": 0,
        "maxAttempts": job.max_attempts,
        "updatedAt": iso(at),
        "jobType": job.type,
    }


def job_progress(job: Envelope, progress: float, message: str) -> dict[str, Any]:
    """A JOB_PROGRESS event: how far a running attempt says it is."""
    return {
        "type": "JOB_PROGRESS",
        "jobId": job.id,
        "tenantId": job.tenant_id,
        "attempts": job.attempt,
        "progress": progress,
        "message": message,
    }
