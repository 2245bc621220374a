"""Schedule rules on a fake clock: every and cron (with time zones and DST as croniter defines
them), catch-up after missed fires, and the validation of a schedule's definition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conveyor.config import Config
from conveyor.handlers import build_registry
from conveyor.schedules import Timing, every_text, fire, parse_every
from conveyor.validation import Invalid, parse_schedule, scheduled_job

CONFIG = Config()
REGISTRY = build_registry(CONFIG)
T0 = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
JOB = {"type": "sleep", "payload": {"delayMs": 0}}


def test_every_parses_durations_and_writes_them_back() -> None:
    assert parse_every("30s") == 30_000 and parse_every("5m") == 300_000 and parse_every("1h") == 3_600_000
    assert parse_every("1h30m") == 5_400_000 and parse_every("1500ms") == 1500 and parse_every("2d") == 172_800_000
    for bad in ("", "1", "999ms", "0s", "1 h", "1x", "-1s", "1.5s", "367d", 5, None, "1s" * 30):
        assert isinstance(parse_every(bad), str), bad
    assert every_text(5_400_000) == "1h30m" and every_text(1500) == "1s500ms" and every_text(86_400_000) == "1d"


def test_every_fires_on_its_anchor_grid() -> None:
    timing = Timing(None, 30_000, "UTC", T0)
    assert timing.next_after(T0) == T0 + timedelta(seconds=30)
    assert timing.next_after(T0 + timedelta(seconds=29.999)) == T0 + timedelta(seconds=30)
    assert timing.next_after(T0 + timedelta(seconds=30)) == T0 + timedelta(seconds=60)
    assert timing.next_after(T0 - timedelta(hours=1)) == T0


def test_cron_fires_in_its_time_zone() -> None:
    paris = Timing("0 9 * * 1-5", None, "Europe/Paris", T0)  # 09:00 Paris, weekdays
    first = paris.next_after(T0)  # Monday 2027-03-01 12:00 UTC is 13:00 in Paris: next is Tuesday
    assert first == datetime(2027, 3, 2, 8, 0, tzinfo=UTC)
    friday = datetime(2027, 3, 5, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert paris.next_after(friday) == datetime(2027, 3, 8, 8, 0, tzinfo=UTC)  # then Monday
    utc = Timing("*/15 * * * *", None, "UTC", T0)
    assert utc.next_after(T0) == T0 + timedelta(minutes=15)


def test_cron_across_daylight_saving_time_is_croniter_s() -> None:
    berlin = Timing("30 2 * * *", None, "Europe/Berlin", T0)
    # 2027-03-28: clocks go from 02:00 to 03:00 in Berlin, so 02:30 does not exist that day
    before = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    fires = [berlin.next_after(before)]
    fires.append(berlin.next_after(fires[-1]))
    local = [f.astimezone(ZoneInfo("Europe/Berlin")) for f in fires]
    assert local[0].date().isoformat() == "2027-03-28" and (local[0].hour, local[0].minute) == (3, 0)
    assert local[1].date().isoformat() == "2027-03-29" and (local[1].hour, local[1].minute) == (2, 30)
    # every hour on 2027-10-31, when 02:00-03:00 happens twice: 02:00 fires in both
    hourly = Timing("0 * * * *", None, "Europe/Berlin", T0)
    at = datetime(2027, 10, 31, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    got = []
    for _ in range(3):
        at = hourly.next_after(at)
        got.append(at)
    assert [g - got[0] for g in got] == [timedelta(0), timedelta(hours=1), timedelta(hours=2)]


def test_a_fire_after_missed_ones_makes_one_job_for_the_earliest() -> None:
    timing = Timing(None, 60_000, "UTC", T0)
    due = T0 + timedelta(minutes=1)
    # on time: the job is for its fire, the next one a minute later
    assert fire(timing, due, due + timedelta(milliseconds=5)) == (due, due + timedelta(minutes=1))
    # ten minutes with no node: one job, for the first missed fire; then on from now
    now = due + timedelta(minutes=10, seconds=20)
    assert fire(timing, due, now) == (due, T0 + timedelta(minutes=12))


def parse(body: dict[str, Any], name: str = "nightly", tenant: str | None = "acme") -> Any:
    return parse_schedule(name, body, REGISTRY, T0, tenant)


def test_a_schedule_definition_is_validated_field_by_field() -> None:
    ok = parse({"cron": "0 3 * * *", "timezone": "Asia/Tokyo", "job": {**JOB, "priority": 8, "maxAttempts": 2}})
    assert ok.tenant == "acme" and ok.timing.cron == "0 3 * * *" and ok.job["priority"] == 8 and not ok.paused
    assert parse({"every": "1s", "job": JOB, "paused": True}).timing.every_ms == 1000
    cases: list[tuple[dict[str, Any], str]] = [
        ({"job": JOB}, "cron"),
        ({"cron": "* * * * *", "every": "1m", "job": JOB}, "cron"),
        ({"cron": "61 * * * *", "job": JOB}, "cron"),
        ({"cron": "* * * * * *", "job": JOB}, "cron"),  # six fields: seconds are not standard
        ({"cron": "@hourly", "job": JOB}, "cron"),
        ({"cron": "0 0 31 2 *", "job": JOB}, "cron"),  # valid fields, but no February 31st: a 500 before
        ({"cron": "* * 31 4 *", "job": JOB}, "cron"),
        ({"cron": 5, "job": JOB}, "cron"),
        ({"every": "500ms", "job": JOB}, "every"),
        ({"every": "soon", "job": JOB}, "every"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus", "job": JOB}, "timezone"),
        ({"cron": "* * * * *", "timezone": "../../etc/passwd", "job": JOB}, "timezone"),
        ({"cron": "* * * * *", "timezone": "", "job": JOB}, "timezone"),
        ({"every": "1m"}, "job"),
        ({"every": "1m", "job": {"type": "nope", "payload": {}}}, "job.type"),
        ({"every": "1m", "job": {"type": "sleep", "payload": {}}}, "job.payload.delayMs"),
        ({"every": "1m", "job": {**JOB, "priority": 10}}, "job.priority"),
        ({"every": "1m", "job": {**JOB, "delayMs": 5}}, "job.delayMs"),
        ({"every": "1m", "job": {**JOB, "maxAttempts": 0}}, "job.maxAttempts"),
        ({"every": "1m", "job": JOB, "paused": "yes"}, "paused"),
        ({"every": "1m", "job": JOB, "when": 1}, "when"),
    ]
    for body, field in cases:
        with pytest.raises(Invalid) as info:
            parse(body)
        assert [d.field for d in info.value.details] == [field], body
    with pytest.raises(Invalid) as info:
        parse({"every": "1m", "job": JOB}, name="bad name")
    assert [d.field for d in info.value.details] == ["name"]
    with pytest.raises(Invalid) as info:
        parse({"every": "1m", "job": JOB}, tenant=None)  # auth off: tenantId is needed
    assert [d.field for d in info.value.details] == ["tenantId"]


def test_a_fire_makes_a_job_that_names_its_schedule() -> None:
    job = scheduled_job("acme", "nightly", {**JOB, "priority": 1}, T0, REGISTRY, CONFIG)
    assert job is not None and (job.tenant_id, job.schedule_name, job.scheduled_for, job.priority) == ("acme", "nightly", T0, 1)
    assert job.max_attempts == CONFIG.max_attempts
    assert scheduled_job("acme", "gone", {"type": "removed", "payload": {}}, T0, REGISTRY, CONFIG) is None
