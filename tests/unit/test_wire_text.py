"""JSON text written from templates on the hot path (wire.created_events, the rows of an insert and
of outcomes) is what json.dumps writes of the same values."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from conveyor.model import NewJob
from conveyor.stores.pg_rows import finish_rows_json, job_rows_json
from conveyor.wire import created_events, job_created

JOBS = [
    NewJob("5b0c6f7e-0d1e-4f6a-8b1c-2d3e4f5a6b7c", "acme", "sleep", {"delayMs": 0}, max_attempts=3, timeout_ms=1000),
    NewJob('i"d\\é', "t.e_n-1", 'tÿpe "x"\n✓🚀\x01', {"a": [1, None, "é"]}, max_attempts=100, timeout_ms=1, priority=0,
           run_at=datetime(2027, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
    NewJob("x", "acme", "sleep", {}, max_attempts=1, timeout_ms=86_400_000, priority=9, delay_ms=5000),
]


def test_created_events_are_the_text_json_dumps_writes() -> None:
    for job, text in zip(JOBS, created_events(JOBS), strict=True):
        at = datetime.fromisoformat(json.loads(text)["updatedAt"].replace("Z", "+00:00"))
        assert text == json.dumps(job_created(job, at))


def test_the_inserts_rows_are_the_jobs_columns() -> None:
    rows = json.loads(job_rows_json(JOBS))
    assert rows == [
        {
            "id": j.id, "tenant_id": j.tenant_id, "type": j.type, "max_attempts": j.max_attempts,
            "timeout_ms": j.timeout_ms, "payload_bytes": len(j.payload_json), "priority": j.priority,
            "run_at": None if j.run_at is None else j.run_at.isoformat(), "delay_ms": j.delay_ms,
            "payload": j.payload,
        }
        for j in JOBS
    ]


def test_the_outcomes_rows_are_what_json_dumps_writes_and_take_a_result_encoded_already() -> None:
    rows = [
        {"id": "a", "attempt": 1, "new_attempt": 1, "status": "COMPLETED", "error": None,
         "result": {"sleptMs": 0, "é": [1.5, None]}, "result_json": None, "delay_ms": 0},
        {"id": 'b"\\', "attempt": 3, "new_attempt": 2, "status": "PENDING", "error": 'boom "x"\n✓',
         "result": None, "delay_ms": 1500},  # no result_json: as the reaper's and tests' rows come
        {"id": "c", "attempt": 1, "new_attempt": 1, "status": "COMPLETED", "error": None,
         "result": {"ignored": True}, "result_json": '{"sent":true}', "delay_ms": 0},
    ]
    written = json.loads(finish_rows_json(rows))
    expected = [{k: v for k, v in row.items() if k != "result_json"} for row in rows]
    expected[2]["result"] = {"sent": True}  # the text wins: it is what the executor encoded
    assert written == expected
