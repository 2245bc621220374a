"""Recurring schedules, as rules: what a schedule may say, when it fires, and what a fire does.
Pure: the clock is passed in, and nothing here touches a store.

A schedule fires on a `cron` expression (the standard five fields, computed by croniter in an
IANA `timezone`; daylight saving time as croniter defines it: a time that does not exist that
day fires at the first one after it, a time that happens twice fires twice) or `every` a
duration (fires at anchor + k × every, the anchor being when the schedule was written). Each
fire makes one job. Fires missed while no node ran make one job at most, for the earliest of
them (its scheduledFor says which); the schedule then goes on from the next fire after now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import croniter

from .handlers import FieldError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
NAME_RULE = "must be 1-100 characters of letters, digits and '_.-', starting with a letter or digit"
EVERY_MIN_MS = 1000
EVERY_MAX_MS = 366 * 86_400_000
CRON_CHARS = 120
TIMEZONE_CHARS = 64
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_EVERY_RE = re.compile(r"(?:(\d{1,12})(ms|s|m|h|d))+")
_PART_RE = re.compile(r"(\d{1,12})(ms|s|m|h|d)")
SCHEDULE_FIELDS = ("tenantId", "cron", "every", "timezone", "job", "paused")
JOB_FIELDS = ("type", "payload", "maxAttempts", "timeoutMs", "priority")  # of a schedule's job


@attrs.frozen
class Timing:
    """When a schedule fires: cron in timezone, or every every_ms from anchor."""

    cron: str | None
    every_ms: int | None
    timezone: str
    anchor: datetime

    def next_after(self, after: datetime) -> datetime:
        """The first fire strictly after `after` (aware), in UTC."""
        if self.every_ms is not None:
            step = timedelta(milliseconds=self.every_ms)
            if after < self.anchor:
                return self.anchor.astimezone(UTC)
            k = (after - self.anchor) // step + 1
            return (self.anchor + k * step).astimezone(UTC)
        assert self.cron is not None
        local = after.astimezone(ZoneInfo(self.timezone))
        found = croniter(self.cron, local).get_next(datetime)
        return found.astimezone(UTC)


def fire(timing: Timing, due: datetime, now: datetime) -> tuple[datetime, datetime]:
    """A due fire (due <= now): the fire time its job is for, and the schedule's next fire.
    However many fires were missed, this is one job, for the earliest (`due`)."""
    return due, timing.next_after(max(now, due))


def parse_every(text: Any) -> int | str:
    """`every` in ms ("30s", "5m", "1h30m", "1500ms"), or what is wrong with it."""
    rule = (f"must be a duration like 30s, 5m, 1h or 1h30m (units ms, s, m, h, d), from "
            f"{EVERY_MIN_MS // 1000} s to {EVERY_MAX_MS // 86_400_000} days")
    if not isinstance(text, str) or len(text) > 40 or not _EVERY_RE.fullmatch(text):
        return rule
    ms = sum(int(n) * _UNITS[unit] for n, unit in _PART_RE.findall(text))
    return ms if EVERY_MIN_MS <= ms <= EVERY_MAX_MS else rule


def every_text(ms: int) -> str:
    """A duration in ms as `every` writes it: 90000 -> "1m30s"."""
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def cron_problem(text: Any) -> str | None:
    rule = "must be a cron expression of five fields (minute hour day-of-month month day-of-week)"
    if not isinstance(text, str) or len(text) > CRON_CHARS or len(text.split()) != 5:
        return rule
    try:
        valid = croniter.is_valid(text)
        if valid:  # valid fields may still name no day at all (February 31st): never fires
            croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception:  # croniter's parser raises more than its own errors on odd input
        return f"{rule}, one that fires at some time"
    return None if valid else rule


def timezone_problem(name: Any) -> str | None:
    rule = "must be an IANA time zone name, like UTC or Europe/Paris"
    if not isinstance(name, str) or not 0 < len(name) <= TIMEZONE_CHARS or not re.fullmatch(r"[A-Za-z0-9_+\-/]+", name):
        return rule
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return rule
    return None


def timing_errors(body: Mapping[str, Any]) -> list[FieldError]:
    """What is wrong with a schedule's cron / every / timezone."""
    errors = []
    has_cron, has_every = body.get("cron") is not None, body.get("every") is not None
    if has_cron == has_every:
        errors.append(FieldError("cron", "give either cron or every (one of them)"))
    elif has_cron and (why := cron_problem(body["cron"])):
        errors.append(FieldError("cron", why))
    elif has_every and isinstance(every := parse_every(body["every"]), str):
        errors.append(FieldError("every", every))
    if "timezone" in body and (why := timezone_problem(body["timezone"])):
        errors.append(FieldError("timezone", why))  # with every, a timezone changes nothing
    return errors


def timing_of(body: Mapping[str, Any], anchor: datetime) -> Timing:
    """The Timing of a body that timing_errors accepted."""
    every = parse_every(body["every"]) if body.get("every") is not None else None
    assert not isinstance(every, str)
    return Timing(body.get("cron"), every, body.get("timezone") or "UTC", anchor)
