"""The resumable feed's rules (feed.py) and progress reports' checks, without I/O."""

from __future__ import annotations

import json

import pytest

from conveyor import feed, progress
from conveyor.feed import Cursor, Verdict, catch_up


def test_ids_parse_and_compare_as_pairs() -> None:
    assert feed.parse_id("1795999505455-0") == (1795999505455, 0)
    assert feed.parse_id("10-2") > feed.parse_id("9-30")  # type: ignore[operator]
    for bad in ("", "12", "1-2-3", "a-1", " 1-2", 12, None, "1" * 21 + "-0"):
        assert feed.parse_id(bad) is None, bad


def test_a_live_event_is_sent_when_it_follows_the_cursor() -> None:
    cursor = Cursor("5-0")
    assert cursor.verdict("6-0", "5-0") is Verdict.SEND
    assert cursor.verdict("5-0", "4-0") is Verdict.SKIP  # already delivered
    assert cursor.verdict("4-0", "3-0") is Verdict.SKIP
    assert cursor.verdict("7-0", "6-0") is Verdict.GAP  # 6-0 was missed
    assert Cursor(feed.NONE).verdict("1-0", feed.NONE) is Verdict.SEND  # the feed's first event


def test_a_read_is_whole_only_when_it_follows_the_cursor() -> None:
    entries = [("6-0", "{}", "5-0"), ("7-0", "{}", "6-0")]
    assert catch_up("5-0", "7-0", entries) == entries
    assert catch_up("4-0", "7-0", entries) is None  # 5-0 was trimmed away
    assert catch_up("5-0", "7-0", [entries[0], ("7-0", "{}", "6-5")]) is None  # broken chain
    assert catch_up("7-0", "7-0", []) == []  # nothing new
    assert catch_up("5-0", "7-0", []) is None  # everything after 5-0 is gone
    assert catch_up("9-0", "7-0", []) is None  # an id the feed never had (lost, or forged)
    assert catch_up(feed.NONE, feed.NONE, []) == []  # a feed with no events yet


def test_the_event_id_goes_first_in_the_message() -> None:
    data = json.dumps({"type": "JOB_UPDATE", "jobId": "j"})
    assert json.loads(feed.with_id("3-1", data)) == {"eventId": "3-1", "type": "JOB_UPDATE", "jobId": "j"}
    assert feed.with_id("3-1", data).startswith('{"eventId": "3-1", ')


def test_progress_reports_are_checked_and_ignored_outside_a_job() -> None:
    for bad in (-1, 101, float("nan"), float("inf"), True, "50", None):
        with pytest.raises(ValueError, match="from 0 to 100"):
            progress.report(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="message"):
        progress.report(5, 7)  # type: ignore[arg-type]
    progress.report(50, "no job here")  # outside a job: nothing happens
