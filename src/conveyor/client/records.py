"""What the client returns: jobs, feed events and queue statistics, typed, built from the
API's JSON (which each keeps in `raw`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


@attrs.frozen
class Job:
    id: str
    tenant_id: str
    type: str
    payload: Any
    status: str
    attempts: int
    max_attempts: int
    timeout_ms: int
    error: str | None
    result: Any
    run_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    raw: dict[str, Any] = attrs.field(repr=False, eq=False, factory=dict)  # the API's JSON
    priority: int = 5
    schedule_name: str | None = None  # the schedule whose fire made it, at scheduled_for
    scheduled_for: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Job:
        return cls(
            id=body["id"], tenant_id=body["tenantId"], type=body["type"], payload=body.get("payload"),
            status=body["status"], attempts=body["attempts"], max_attempts=body["maxAttempts"],
            timeout_ms=body["timeoutMs"], error=body.get("error"), result=body.get("result"),
            run_at=_time(body.get("runAt")), created_at=_time(body.get("createdAt")),
            updated_at=_time(body.get("updatedAt")), raw=dict(body), priority=body.get("priority", 5),
            schedule_name=body.get("scheduleName"), scheduled_for=_time(body.get("scheduledFor")),
        )


@attrs.frozen
class Event:
    """A message of the tenant's feed: JOB_UPDATE or JOB_PROGRESS (with its eventId);
    SUBSCRIBED, at each (re)connection once the feed is followed; or RESYNC (events after the
    last one were no longer kept: reload what you need through get or list)."""

    type: str
    event_id: str | None
    job_id: str | None
    status: str | None
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, msg: dict[str, Any]) -> Event:
        return cls(msg.get("type", "?"), msg.get("eventId") or msg.get("lastEventId"), msg.get("jobId"),
                   msg.get("status"), msg)


@attrs.frozen
class Stats:
    tenant_id: str
    unfinished: int
    running: int
    waiting: int


@attrs.frozen
class Schedule:
    """A recurring schedule: cron (in timezone) or every, the job each fire makes, and its
    fires (next_fire_at is None while paused)."""

    name: str
    tenant_id: str
    cron: str | None
    every: str | None
    timezone: str
    job: dict[str, Any]
    paused: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: str | None
    raw: dict[str, Any] = attrs.field(repr=False, eq=False, factory=dict)  # the API's JSON

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Schedule:
        return cls(
            name=body["name"], tenant_id=body["tenantId"], cron=body.get("cron"), every=body.get("every"),
            timezone=body.get("timezone", "UTC"), job=dict(body.get("job") or {}), paused=bool(body.get("paused")),
            next_fire_at=_time(body.get("nextFireAt")), last_fire_at=_time(body.get("lastFireAt")),
            last_job_id=body.get("lastJobId"), raw=dict(body),
        )
