"""Pure job rules: retry decisions, backoff maths, and the status each outcome is written as.

No I/O, no clocks, no trio: callers pass randomness in, so every rule is unit-tested. Which
status changes are allowed is enforced where the writes happen, by the fenced statements in
stores/sql/queries.sql: a non-terminal row may change, a terminal one never, attempts only grow.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .model import Outcome, Status


def backoff_ms(
    attempt: int, *, base_ms: int, cap_ms: int, rand: Callable[[], float] = random.random
) -> int:
    """Delay before the retry that follows failed attempt `attempt` (1-based).

    Exponential (base, 2·base, 4·base, …) capped at cap_ms, with "equal jitter": the delay is
    drawn uniformly from [d/2, d], so retries of a burst of failures spread out but never come
    sooner than half the nominal delay.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    nominal = min(cap_ms, base_ms * (2 ** min(attempt - 1, 40)))
    half = nominal / 2
    return int(half + rand() * half)


def after_failure(attempt: int, max_attempts: int) -> Outcome:
    """What a failed attempt leads to: another try, or the end."""
    return Outcome.RETRY if attempt < max_attempts else Outcome.FAILED


_STATUS = {
    Outcome.COMPLETED: Status.COMPLETED,
    Outcome.FAILED: Status.FAILED,
    Outcome.RETRY: Status.PENDING,
    Outcome.HANDBACK: Status.PENDING,
    Outcome.REQUEUED: Status.PENDING,
    Outcome.CANCELLED: Status.CANCELLED,
}
_INDEX_ACTION = {
    Outcome.COMPLETED: "completed",
    Outcome.FAILED: "failed",
    Outcome.RETRY: "retry",
    Outcome.HANDBACK: "handback",
    Outcome.REQUEUED: "requeue",
    Outcome.CANCELLED: "done",
}

_END_ACTION: dict[str, str] = {Status.COMPLETED: "completed", Status.FAILED: "failed"}  # StrEnum: a str finds its member


def status_of(outcome: Outcome) -> Status:
    """The PostgreSQL status an outcome is recorded as."""
    return _STATUS[outcome]


def index_action(outcome: Outcome) -> str:
    """What the dispatch index does with an outcome that PostgreSQL accepted (finish.lua)."""
    return _INDEX_ACTION[outcome]


def end_action(status: str) -> str:
    """What the dispatch index does with a job that PostgreSQL says has ended: drop it, and
    count a completion or a failure in the tenant's history."""
    return _END_ACTION.get(status, "done")
