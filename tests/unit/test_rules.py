from __future__ import annotations

import pytest

from conveyor import rules
from conveyor.model import Outcome, Status


def test_backoff_doubles_and_is_capped() -> None:
    top = [rules.backoff_ms(a, base_ms=100, cap_ms=1000, rand=lambda: 1.0) for a in range(1, 7)]
    assert top == [100, 200, 400, 800, 1000, 1000]


def test_backoff_jitter_stays_within_half_to_full() -> None:
    low = [rules.backoff_ms(a, base_ms=100, cap_ms=10_000, rand=lambda: 0.0) for a in (1, 2, 3)]
    assert low == [50, 100, 200]
    mid = rules.backoff_ms(3, base_ms=100, cap_ms=10_000, rand=lambda: 0.5)
    assert mid == 300


def test_backoff_huge_attempt_does_not_overflow() -> None:
    assert rules.backoff_ms(10_000, base_ms=1000, cap_ms=5000, rand=lambda: 1.0) == 5000


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        rules.backoff_ms(0, base_ms=1, cap_ms=1)


def test_after_failure_retries_until_max() -> None:
    assert rules.after_failure(1, 3) is Outcome.RETRY
    assert rules.after_failure(2, 3) is Outcome.RETRY
    assert rules.after_failure(3, 3) is Outcome.FAILED
    assert rules.after_failure(1, 1) is Outcome.FAILED


def test_status_of_outcomes() -> None:
    assert rules.status_of(Outcome.COMPLETED) is Status.COMPLETED
    assert rules.status_of(Outcome.RETRY) is Status.PENDING
    assert rules.status_of(Outcome.HANDBACK) is Status.PENDING


def test_the_list_of_every_status_reads_each_status() -> None:
    """list_jobs_any_status merges one branch per status: a status missing there would be missing
    from every list without a status filter."""
    from conveyor.stores.sqlfiles import QUERIES

    query = QUERIES["list_jobs_any_status"]
    for status in Status:
        assert f"status = '{status.value}'" in query, status
    assert query.count("UNION ALL") == len(Status) - 1


def test_an_ended_status_says_what_the_dispatch_index_does() -> None:
    assert [rules.end_action(s) for s in ("COMPLETED", "FAILED", "CANCELLED")] == ["completed", "failed", "done"]
    assert rules.end_action(Status.COMPLETED) == "completed"
