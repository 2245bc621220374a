"""The nouns of conveyor: job statuses, the claimed-job envelope and actor messages.

Plain attrs classes only; no I/O and no trio here, so every layer can import it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from .storable import dumps

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CANCELLED_BY_REQUEST = "cancelled by request"  # the error of a job cancelled through the API
PRIORITY_DEFAULT = 5  # of 0 (most urgent) .. 9: urgent work can jump ahead, bulk work step back


class Status(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


@attrs.frozen
class NewJob:
    """A validated submission, ready for the writer."""

    id: str
    tenant_id: str
    type: str
    payload: dict[str, Any]
    max_attempts: int
    timeout_ms: int
    # the payload as stored (in PostgreSQL and the envelope), encoded once
    payload_json: str = attrs.field(
        default=attrs.Factory(lambda self: dumps(self.payload), takes_self=True), repr=False
    )
    priority: int = PRIORITY_DEFAULT  # FIFO within a priority
    # when it may run: delay_ms after it is stored (each store by its own clock), or at run_at
    delay_ms: int = 0
    run_at: datetime | None = None
    schedule_name: str | None = None  # made by this schedule's fire at scheduled_for
    scheduled_for: datetime | None = None

    @property
    def run_at_ms(self) -> int:
        """run_at in ms since the epoch, rounded up (a job never runs before its runAt, whose
        microseconds PostgreSQL keeps); 0: none."""
        if self.run_at is None:
            return 0
        micros = (self.run_at - EPOCH) // timedelta(microseconds=1)
        return -(-micros // 1000)


@attrs.frozen
class Envelope:
    """What the claim script returns: everything an executor needs, no PostgreSQL read."""

    id: str
    tenant_id: str
    type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_ms: int
    waited_ms: int = -1  # how long it waited ready before this claim (-1: not known)
    retries: int = 0  # attempt numbers skipped by retries by hand: attempt less this counts runs

    @property
    def runs(self) -> tuple[int, int]:
        """This attempt and the most there may be, as the API shows them (counting runs)."""
        return self.attempt - self.retries, self.max_attempts - self.retries


class Outcome(enum.Enum):
    COMPLETED = "completed"  # terminal success
    FAILED = "failed"  # terminal failure
    RETRY = "retry"  # back to the delayed set with backoff
    HANDBACK = "handback"  # drain: back to ready, attempt not counted
    REQUEUED = "requeued"  # lease expired: back to ready once PostgreSQL says the job is not over
    LOST = "lost"  # lease lost to another attempt: record nothing
    CANCELLED = "cancelled"  # cancelled by request (POST /jobs/{id}/cancel): terminal


@attrs.frozen
class Started:
    job: Envelope


@attrs.frozen
class Finished:
    job: Envelope
    outcome: Outcome
    error: str | None = None
    result: Any = None
    delay_ms: int = 0
    result_json: str | None = None  # the result as JSON text, when the executor encoded it already


@attrs.frozen
class Progress:
    """A running attempt's latest progress report (progress.py)."""

    job: Envelope
    progress: float
    message: str


@attrs.frozen
class Flush:
    """Ask the recorder to report (by setting done) once everything sent before it is written."""

    done: Any  # trio.Event; typed loosely to keep trio out of this module


Record = Started | Finished | Progress | Flush  # what the recorder's channel carries


@attrs.frozen
class Fire:
    """A schedule's due fire, as planned: the job it makes (None: none, its job no longer
    validates), the fire time that job is for, and the schedule's next fire."""

    tenant_id: str
    name: str
    fired_for: datetime
    next_fire_at: datetime
    job: NewJob | None


@attrs.frozen
class JobRecord:
    """A job as PostgreSQL holds it: what the jobs service returns and wire.py renders. A page
    of a list may leave out a large payload or result (None, and the *_omitted flag set)."""

    id: str
    tenant_id: str
    type: str
    payload: Any
    status: Status
    attempts: int
    max_attempts: int
    timeout_ms: int
    error: str | None
    result: Any
    run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    payload_omitted: bool = False
    result_omitted: bool = False
    retries: int = 0  # attempt numbers skipped by retries by hand (the fence); not runs
    priority: int = PRIORITY_DEFAULT
    schedule_name: str | None = None
    scheduled_for: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRecord:
        return cls(
            id=row["id"], tenant_id=row["tenant_id"], type=row["type"], payload=row["payload"],
            status=Status(row["status"]), attempts=row["attempts"], max_attempts=row["max_attempts"],
            timeout_ms=row["timeout_ms"], error=row["error"], result=row["result"], run_at=row["run_at"],
            created_at=row["created_at"], updated_at=row["updated_at"],
            payload_omitted=bool(row.get("payload_omitted")), result_omitted=bool(row.get("result_omitted")),
            retries=row.get("retries") or 0, priority=row.get("priority", PRIORITY_DEFAULT),
            schedule_name=row.get("schedule_name"), scheduled_for=row.get("scheduled_for"),
        )


def new_ids(n: int) -> list[str]:
    """n random (version 4) UUIDs as text, from one read of the OS's random source: a fifth of
    what uuid.uuid4() costs each."""
    raw = bytearray(os.urandom(16 * n))
    ids = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = raw[i + 6] & 0x0F | 0x40  # version 4
        raw[i + 8] = raw[i + 8] & 0x3F | 0x80  # the RFC 4122 variant
        h = raw[i : i + 16].hex()
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids
