from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from conveyor import paging
from conveyor.config import Config
from conveyor.handlers import build_registry
from conveyor.model import new_ids
from conveyor.validation import (
    BATCH_STEP,
    Invalid,
    ListQuery,
    parse_batch,
    parse_batch_in_steps,
    parse_list_query,
    parse_submission,
    run_at_problem,
)

CONFIG = Config(sleep_max_ms=10_000)
REGISTRY = build_registry(CONFIG)


def fields(body: Any) -> set[str]:
    with pytest.raises(Invalid) as info:
        parse_submission(body, REGISTRY, CONFIG)
    return {d.field for d in info.value.details}


def test_valid_submission_gets_defaults() -> None:
    job = parse_submission(
        {"tenantId": "t", "type": "sleep", "payload": {"delayMs": 5}}, REGISTRY, CONFIG
    )
    assert job.max_attempts == 3
    assert job.timeout_ms == 30_005
    assert len(job.id) == 36


def test_reference_schema_rules() -> None:
    assert fields({"type": "sleep", "payload": {"delayMs": 1}}) == {"tenantId"}
    assert fields({"tenantId": "x" * 101, "type": "sleep", "payload": {"delayMs": 1}}) == {"tenantId"}
    assert fields({"tenantId": "", "type": "sleep", "payload": {"delayMs": 1}}) == {"tenantId"}
    assert fields({"tenantId": "t", "type": "fax", "payload": {}}) == {"type"}
    assert fields({"tenantId": "t", "type": "sleep", "payload": []}) == {"payload"}
    assert fields([1, 2]) == {"body"}


@pytest.mark.parametrize(
    ("type_", "payload", "field"),
    [
        ("sleep", {}, "payload.delayMs"),
        ("sleep", {"delayMs": -1}, "payload.delayMs"),
        ("sleep", {"delayMs": 10_001}, "payload.delayMs"),
        ("sleep", {"delayMs": True}, "payload.delayMs"),
        ("email", {"to": "nobody", "subject": "s", "body": "b"}, "payload.to"),
        ("email", {"to": "a@b.co", "subject": "", "body": "b"}, "payload.subject"),
        ("email", {"to": "a@b.co", "subject": "s"}, "payload.body"),
        ("webhook", {"url": "ftp://x.y/", "method": "POST"}, "payload.url"),
        ("webhook", {"url": "http://x.y/", "method": "BREW"}, "payload.method"),
        ("webhook", {"url": "http://x.y/", "headers": {"a": 1}}, "payload.headers"),
        ("data_processing", {"records": [], "operation": "avg", "field": "x"}, "payload.operation"),
    ],
)
def test_payload_rules(type_: str, payload: dict[str, Any], field: str) -> None:
    assert field in fields({"tenantId": "t", "type": type_, "payload": payload})


@pytest.mark.parametrize("subject", ["a\nb", "a\rb", "a\x0bb", "a\x0cb", "a\x1cb", "a\x1eb", "a\x85b", "a\u2028b", "a\u2029b", "a\n"])
def test_an_email_subject_is_one_line_as_the_email_package_counts_lines(subject: str) -> None:
    # each of these once passed the rule and made the handler raise when the job ran
    payload = {"to": "a@b.co", "subject": subject, "body": "b"}
    assert "payload.subject" in fields({"tenantId": "t", "type": "email", "payload": payload})
    if len(subject.splitlines()) > 1:
        with pytest.raises(ValueError, match="linefeed"):
            EmailMessage()["Subject"] = subject
    parse_submission({"tenantId": "t", "type": "email", "payload": {**payload, "subject": "a b"}}, REGISTRY, CONFIG)


def test_optional_limits() -> None:
    base = {"tenantId": "t", "type": "sleep", "payload": {"delayMs": 1}}
    assert fields({**base, "maxAttempts": 0}) == {"maxAttempts"}
    assert fields({**base, "maxAttempts": "3"}) == {"maxAttempts"}
    assert fields({**base, "timeoutMs": 0}) == {"timeoutMs"}
    job = parse_submission({**base, "maxAttempts": 5, "timeoutMs": 100}, REGISTRY, CONFIG)
    assert (job.max_attempts, job.timeout_ms) == (5, 100)


def test_unknown_fields_are_refused_by_name() -> None:
    # a typo such as maxAttempt used to be accepted silently, and the job got the default 3 attempts
    base = {"tenantId": "t", "type": "sleep", "payload": {"delayMs": 1}}
    with pytest.raises(Invalid) as info:
        parse_submission({**base, "maxAttempt": 1}, REGISTRY, CONFIG)
    (detail,) = info.value.details
    assert detail.field == "maxAttempt" and "maxAttempts" in detail.message
    with pytest.raises(Invalid) as info:
        parse_batch({"jobs": [base, {**base, "priorty": 1}], "x": 1}, REGISTRY, CONFIG)
    assert sorted(d.field for d in info.value.details) == ["jobs[1].priorty", "x"]
    # many unknown fields get a bounded answer: ten named (long names cut), then how many more
    with pytest.raises(Invalid) as info:
        parse_submission({**base, **{f"k{i}" + "x" * 500: i for i in range(100_000)}}, REGISTRY, CONFIG)
    details = info.value.details
    assert len(details) == 11 and all(len(d.field) <= 101 for d in details[:10])
    assert details[10].field == "body" and "99990 more" in details[10].message
    with pytest.raises(Invalid) as info:
        parse_batch({"jobs": [{**base, **{f"k{i}": i for i in range(50)}}] * 1000}, REGISTRY, CONFIG)
    assert len(info.value.details) == 101 and "10900 more errors" in info.value.details[-1].message
    # a payload's own fields are its handler's to judge
    assert parse_submission({**base, "payload": {"delayMs": 1, "note": "hi"}}, REGISTRY, CONFIG)


def test_batch_is_all_or_nothing_and_names_the_item() -> None:
    good = {"tenantId": "t", "type": "sleep", "payload": {"delayMs": 1}}
    with pytest.raises(Invalid) as info:
        parse_batch({"jobs": [good, {**good, "type": "fax"}]}, REGISTRY, CONFIG)
    assert [d.field for d in info.value.details] == ["jobs[1].type"]
    for bad in ({"jobs": []}, {"jobs": [good] * 1001}, {"jobs": "x"}, []):
        with pytest.raises(Invalid):
            parse_batch(bad, REGISTRY, CONFIG)
    assert len(parse_batch({"jobs": [good] * 1000}, REGISTRY, CONFIG)) == 1000


def test_new_ids_are_distinct_version_4_uuids() -> None:
    ids = new_ids(2000)
    assert len(set(ids)) == 2000 and new_ids(0) == []
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_batch_is_checked_and_built_in_steps() -> None:
    good = {"tenantId": "t", "type": "sleep", "payload": {"delayMs": 1}}
    steps = parse_batch_in_steps({"jobs": [good] * 1000}, REGISTRY, CONFIG)
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            jobs = done.value
            break
        yields += 1
    # a step between every BATCH_STEP jobs, checking and then building
    assert yields == 2 * (1000 // BATCH_STEP - 1)
    assert len(jobs) == 1000 and len({job.id for job in jobs}) == 1000
    bad = parse_batch_in_steps({"jobs": [good] * 999 + [{**good, "type": "fax"}]}, REGISTRY, CONFIG)
    with pytest.raises(Invalid) as info:
        for _ in bad:
            pass  # every step checks; the error comes once all are checked
    assert [d.field for d in info.value.details] == ["jobs[999].type"]


def test_list_query() -> None:
    assert parse_list_query({"tenantId": "t"}) == ListQuery("t", None, None, 20, 0)
    assert parse_list_query(
        {"tenantId": "t", "status": "FAILED", "type": "email", "limit": "100", "offset": "5"}
    ) == ListQuery("t", "FAILED", "email", 100, 5)
    at = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)
    job_id = str(uuid.uuid4())
    cursor = paging.encode(at, job_id)
    assert parse_list_query({"tenantId": "t", "cursor": cursor}).after == (at, job_id)
    for bad in ({}, {"tenantId": "t", "limit": "0"}, {"tenantId": "t", "limit": "101"},
                {"tenantId": "t", "offset": "-1"}, {"tenantId": "t", "status": "DONE"},
                {"tenantId": "t", "limit": "ten"}, {"tenantId": "t", "type": "x" * 101},
                {"tenantId": "t", "limit": "１０"}, {"tenantId": "t", "limit": " 10"}, {"tenantId": "t", "limit": "1_0"},
                {"tenantId": "t", "offset": "-0"}, {"tenantId": "t", "limit": "+5"},
                {"tenantId": "t", "cursor": "nope"}, {"tenantId": "t", "cursor": cursor, "offset": "3"},
                {"tenantId": "t", "cursor": cursor[:-3]}, {"tenantId": "t", "cursor": "x" * 201},
                {"tenantId": "t", "cursor": base64.urlsafe_b64encode(b"2026-12-02T10:00:00|x").decode()}):
        with pytest.raises(Invalid):
            parse_list_query(bad)


def test_timing_fields() -> None:
    base = {"tenantId": "t", "type": "sleep", "payload": {"delayMs": 1}}
    job = parse_submission({**base, "priority": 0, "delayMs": 2500}, REGISTRY, CONFIG)
    assert (job.priority, job.delay_ms, job.run_at) == (0, 2500, None)
    job = parse_submission({**base, "runAt": "2027-06-01T12:00:00+02:00"}, REGISTRY, CONFIG)
    assert job.run_at == datetime(2027, 6, 1, 10, 0, tzinfo=UTC) and job.run_at_ms == 1811844000000
    assert parse_submission(base, REGISTRY, CONFIG).priority == 5
    # the dispatch index counts in ms: a runAt between two is due at the later one, never before
    job = parse_submission({**base, "runAt": "2027-06-01T10:00:00.000001Z"}, REGISTRY, CONFIG)
    assert job.run_at_ms == 1811844000001
    job = parse_submission({**base, "runAt": "2027-06-01T10:00:00.149456+00:00"}, REGISTRY, CONFIG)
    assert job.run_at_ms == 1811844000150
    assert parse_submission({**base, "runAt": "2027-06-01T12:00:00Z"}, REGISTRY, CONFIG).run_at == datetime(2027, 6, 1, 12, tzinfo=UTC)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert run_at_problem("2027-01-02T00:00:00+00:00", now) == datetime(2027, 1, 2, tzinfo=UTC)  # 366 days
    assert isinstance(run_at_problem("2027-01-02T00:00:01+00:00", now), str)
