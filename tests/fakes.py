"""In-memory stores for the actors' unit tests: what conveyor.stores.protocols asks of PostgreSQL
(JobRows) and Redis (Dispatch), with every call recorded and outages or refusals on demand.

The fencing rule is PostgreSQL's (stores/sql/record.sql): a start or an outcome changes a row
only while the row is at that attempt and has not ended.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from conveyor.failures import DataRefused, StoreUnavailable
from conveyor.model import TERMINAL, Envelope, NewJob, Status
from conveyor.stores.postgres import IdempotencyKey
from conveyor.stores.redis import Applied, ClaimAsk
from conveyor.wire import job_update

Row = dict[str, Any]


class Outages:
    """Calls that fail: name -> how many of the next calls of it raise StoreUnavailable."""

    def __init__(self) -> None:
        self.left: dict[str, int] = {}

    def add(self, name: str, times: int = 1) -> None:
        self.left[name] = self.left.get(name, 0) + times

    def check(self, name: str) -> None:
        if self.left.get(name, 0) > 0:
            self.left[name] -= 1
            raise StoreUnavailable(f"{name}: connection refused (fake)")


class FakeJobRows:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.calls: list[tuple[str, Any]] = []
        self.outages = Outages()
        self.refused_ids: set[str] = set()  # values PostgreSQL cannot store, by job id
        self.keys: set[tuple[str, str]] = set()

    def add(self, envelope: Envelope, status: Status = Status.RUNNING) -> None:
        """A row for a job that was claimed at envelope.attempt."""
        self.rows[envelope.id] = {
            "id": envelope.id, "tenant_id": envelope.tenant_id, "status": status.value, "error": None,
            "attempts": envelope.attempt, "max_attempts": envelope.max_attempts, "result": None,
            "updated_at": datetime.now(UTC),
        }

    async def insert_jobs(
        self, submissions: Sequence[tuple[IdempotencyKey | None, Sequence[NewJob]]], *, retain_s: float = 86_400
    ) -> set[tuple[str, str]]:
        self.calls.append(("insert_jobs", [list(jobs) for _, jobs in submissions]))
        await trio.lowlevel.checkpoint()
        self.outages.check("insert_jobs")
        if any(job.id in self.refused_ids for _, jobs in submissions for job in jobs):
            raise DataRefused("invalid input syntax for type json (fake)")
        taken = set()
        for key, jobs in submissions:
            if key is not None:
                if (key.tenant, key.key) in self.keys:
                    continue
                self.keys.add((key.tenant, key.key))
                taken.add((key.tenant, key.key))
            for job in jobs:
                self.rows[job.id] = {
                    "id": job.id, "tenant_id": job.tenant_id, "status": "PENDING", "error": None,
                    "attempts": 0, "max_attempts": job.max_attempts, "result": None,
                    "updated_at": datetime.now(UTC),
                }
        return taken

    async def record(self, starts: Sequence[tuple[str, int]], finishes: Sequence[Row]) -> tuple[list[Row], list[Row]]:
        self.calls.append(("record", (list(starts), [dict(f) for f in finishes])))
        await trio.lowlevel.checkpoint()
        self.outages.check("record")
        if any(f["id"] in self.refused_ids for f in finishes if f["status"] != "FAILED" or f["result"]):
            raise DataRefused("invalid input syntax for type json (fake)")
        started = []
        for job_id, attempt in starts:
            row = self.rows.get(job_id)
            if row is not None and row["attempts"] == attempt and row["status"] not in TERMINAL:
                row.update(status="RUNNING", updated_at=datetime.now(UTC))
                started.append(dict(row))
        finished = []
        for f in finishes:
            row = self.rows.get(f["id"])
            if row is not None and row["attempts"] == f["attempt"] and row["status"] not in TERMINAL:
                result = json.loads(f["result_json"]) if f.get("result_json") is not None else f["result"]
                row.update(status=f["status"], error=f["error"], result=result, attempts=f["new_attempt"],
                           updated_at=datetime.now(UTC))
                finished.append({"id": row["id"], "status": row["status"], "event": json.dumps(job_update(row))})
        return started, finished

    async def job_states(self, ids: Sequence[str]) -> list[Row]:
        self.calls.append(("job_states", list(ids)))
        await trio.lowlevel.checkpoint()
        self.outages.check("job_states")
        return [dict(self.rows[i]) for i in ids if i in self.rows]

    def called(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]


class FakeDispatch:
    def __init__(self) -> None:
        self.ready: list[Envelope] = []
        self.calls: list[tuple[str, Any]] = []
        self.outages = Outages()
        self.verdicts: dict[str, tuple[str, int]] = {}  # tenant -> admission verdict (default ok)
        self.woken = trio.Event()
        self.claims_on_enqueue = False  # as a Redis of several shards: the fetchers claim

    async def admit(self, requests: Sequence[tuple[str, int, int, float, int, int, int]]) -> list[tuple[str, int]]:
        self.calls.append(("admit", list(requests)))
        await trio.lowlevel.checkpoint()
        self.outages.check("admit")
        return [self.verdicts.get(r[0], ("ok", 0)) for r in requests]

    async def enqueue(self, jobs: Sequence[NewJob], created: Sequence[str]) -> int:
        self.calls.append(("enqueue", (list(jobs), list(created))))
        await trio.lowlevel.checkpoint()
        self.outages.check("enqueue")
        return len(jobs)

    async def enqueue_claiming(self, jobs: Sequence[NewJob], created: Sequence[str], ask: ClaimAsk) -> list[Envelope]:
        """Claims from `ready` (what a test put there) up to ask.n, after the jobs."""
        self.calls.append(("enqueue_claiming", (list(jobs), ask)))
        await trio.lowlevel.checkpoint()
        self.outages.check("enqueue")
        taken, self.ready = self.ready[:ask.n], self.ready[ask.n:]
        return taken

    async def claim(self, n: int, *, node: str, lease_ms: int, max_running: int = 0) -> list[Envelope]:
        self.calls.append(("claim", n))
        await trio.lowlevel.checkpoint()
        self.outages.check("claim")
        taken, self.ready = self.ready[:n], self.ready[n:]
        return taken

    async def wait_wake(self, block_s: int) -> bool:
        self.calls.append(("wait_wake", block_s))
        self.outages.check("wait_wake")
        with trio.move_on_after(block_s):
            await self.woken.wait()
            self.woken = trio.Event()
            return True
        return False

    async def finish(self, outcomes: Sequence[Applied], events: Sequence[tuple[str, str, str]] = ()) -> None:
        self.calls.append(("finish", (list(outcomes), list(events))))
        await trio.lowlevel.checkpoint()
        self.outages.check("finish")

    async def publish(self, events: Sequence[tuple[str, str, str]]) -> None:
        self.calls.append(("publish", list(events)))
        await trio.lowlevel.checkpoint()
        self.outages.check("publish")

    def called(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]
