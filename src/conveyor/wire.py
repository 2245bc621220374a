"""The JSON wire format: jobs and events with the reference system's camelCase names.

Pure functions from job records and rows to dicts; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from .model import Envelope, JobRecord, NewJob
from .schedules import every_text
from .storable import quote


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with milliseconds and a Z, as JavaScript's Date.toJSON()."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(job: JobRecord) -> dict[str, Any]:
    """A job as the API shows it. A list's record may leave out a large payload or result: then
    it is null and payloadOmitted / resultOmitted is true (GET /jobs/{id} has it)."""
    body = {
        "id": job.id,
        "tenantId": job.tenant_id,
        "type": job.type,
        "payload": job.payload,
        "status": job.status.value,
        "attempts": job.attempts - job.retries,  # runs: a retry's skipped number is not one
        "maxAttempts": job.max_attempts - job.retries,
        "timeoutMs": job.timeout_ms,
        "error": job.error,
        "result": job.result,
        "runAt": iso(job.run_at),
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
        "priority": job.priority,
        "scheduleName": job.schedule_name,
        "scheduledFor": iso(job.scheduled_for),
    }
    if job.payload_omitted:
        body["payloadOmitted"] = True
    if job.result_omitted:
        body["resultOmitted"] = True
    return body


def job_update(job: Mapping[str, Any] | JobRecord) -> dict[str, Any]:
    """The reference's JOB_UPDATE WebSocket message, plus tenantId, attempts and timestamps, of a
    job's record or of a row the recorder wrote (the columns of stores/sql's job_states)."""
    row = attrs.asdict(job, recurse=False) if isinstance(job, JobRecord) else job
    return {
        "type": "JOB_UPDATE",
        "jobId": row["id"],
        "tenantId": row["tenant_id"],
        "status": row["status"],
        "error": row["error"],
        "attempts": row["attempts"] - (row.get("retries") or 0),
        "maxAttempts": row["max_attempts"] - (row.get("retries") or 0),
        "updatedAt": iso(row["updated_at"]),
    }


def created_events(jobs: Sequence[NewJob]) -> list[str]:
    """The PENDING events of jobs just committed, as the JSON text the feeds carry: what
    json.dumps(job_created(job, now)) writes, built from a template (every job of every batch
    has one; a batch's tenants and types are encoded once)."""
    at = iso(datetime.now(UTC))
    quoted: dict[str, str] = {}

    def q(text: str) -> str:
        if (found := quoted.get(text)) is None:
            found = quoted[text] = quote(text)
        return found

    return [
        f'{{"type": "JOB_UPDATE", "jobId": {quote(job.id)}, "tenantId": {q(job.tenant_id)}, "status": "PENDING", '
        f'"error": null, "attempts": 0, "maxAttempts": {int(job.max_attempts)}, "updatedAt": "{at}", '
        f'"jobType": {q(job.type)}}}'
        for job in jobs
    ]


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
        "attempts": job.runs[0],
        "progress": progress,
        "message": message,
    }


def schedule_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule as the API shows it (a row of stores/sql's schedules)."""
    return {
        "name": row["name"],
        "tenantId": row["tenant_id"],
        "cron": row["cron"],
        "every": every_text(row["every_ms"]) if row["every_ms"] is not None else None,
        "timezone": row["timezone"],
        "job": row["job"],
        "paused": row["paused"],
        "nextFireAt": None if row["paused"] else iso(row["next_fire_at"]),
        "lastFireAt": iso(row["last_fire_at"]),
        "lastJobId": row["last_job_id"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }
