"""The JSON text of rows PostgreSQL reads (json_to_recordset): new jobs for insert_jobs, outcomes
for record_finished, and the array parameters of a schedule's jobs. Written from templates, since
every job of every batch passes through here; payloads and results already encoded go in as they
are."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..model import NewJob
from ..storable import quote
from . import pg_trio

INSERT_ROWS_PER_STEP = 200  # of an insert: encoded between two turns of the event loop


def job_rows_json(jobs: Sequence[NewJob]) -> str:
    """The jobs as the JSON array of objects that insert_jobs reads; each payload's JSON text
    goes in as it is, not encoded again, and the rest is written from a template (a batch's
    tenants and types encoded once). In a driven call, the event loop gets a turn every
    INSERT_ROWS_PER_STEP jobs (a 2,000-job batch is milliseconds of this)."""
    quoted: dict[str, str] = {}

    def q(text: str) -> str:
        if (found := quoted.get(text)) is None:
            found = quoted[text] = quote(text)
        return found

    rows = []
    for i, j in enumerate(jobs):
        if i and not i % INSERT_ROWS_PER_STEP:
            pg_trio.pause()
        run_at = "null" if j.run_at is None else quote(j.run_at.isoformat())
        rows.append(
            f'{{"id": {quote(j.id)}, "tenant_id": {q(j.tenant_id)}, "type": {q(j.type)}, '
            f'"max_attempts": {int(j.max_attempts)}, "timeout_ms": {int(j.timeout_ms)}, '
            f'"payload_bytes": {len(j.payload_json)}, "priority": {int(j.priority)}, "run_at": {run_at}, '
            f'"delay_ms": {int(j.delay_ms)}, "payload": {j.payload_json}}}'
        )
    return f"[{','.join(rows)}]"


def finish_rows_json(finishes: Sequence[dict[str, Any]]) -> str:
    """The outcomes (id, attempt, new_attempt, status, error, result, delay_ms) as the JSON
    array that record_finished reads, from a template; a result given as JSON text
    (result_json) goes in as it is, not encoded again."""
    rows = []
    for f in finishes:
        result = f.get("result_json")
        if result is None:
            result = "null" if f["result"] is None else json.dumps(f["result"])
        error = "null" if f["error"] is None else quote(f["error"])
        rows.append(
            f'{{"id": {quote(f["id"])}, "attempt": {int(f["attempt"])}, "new_attempt": {int(f["new_attempt"])}, '
            f'"status": {quote(f["status"])}, "error": {error}, "result": {result}, "delay_ms": {int(f["delay_ms"])}}}'
        )
    return f"[{','.join(rows)}]"


def job_params(jobs: Sequence[NewJob]) -> dict[str, list[Any]]:
    return {
        "ids": [j.id for j in jobs],
        "tenants": [j.tenant_id for j in jobs],
        "types": [j.type for j in jobs],
        "payloads": [j.payload_json for j in jobs],
        "payload_bytes": [len(j.payload_json) for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "timeouts": [j.timeout_ms for j in jobs],
        "priorities": [j.priority for j in jobs],
        "run_ats": [j.run_at for j in jobs],
        "delays": [j.delay_ms for j in jobs],
    }
