"""What the actors need of the stores, as protocols: PostgresStore and RedisStore implement them,
and the unit tests give the writer, recorder and fetcher in-memory fakes (tests/fakes.py).

Only the calls of the hot path are here: the actors that do maintenance work against the real
stores in the integration and fault suites.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..model import Envelope, NewJob
from .postgres import IdempotencyKey
from .redis import Applied, ClaimAsk

Row = dict[str, Any]
AdmitRequest = tuple[str, int, int, float, int, int, int]  # see RedisStore.admit


class JobRows(Protocol):
    """PostgreSQL as the writer and the recorder use it."""

    async def insert_jobs(
        self, submissions: Sequence[tuple[IdempotencyKey | None, Sequence[NewJob]]], *, retain_s: float = ...
    ) -> set[tuple[str, str]]: ...

    async def record(
        self, starts: Sequence[tuple[str, int]], finishes: Sequence[Row]
    ) -> tuple[list[Row], list[Row]]: ...

    async def job_states(self, ids: Sequence[str]) -> list[Row]: ...


class Dispatch(Protocol):
    """Redis as the writer, the recorder and the fetcher use it."""

    async def admit(self, requests: Sequence[AdmitRequest]) -> list[tuple[str, int]]: ...

    async def enqueue(self, jobs: Sequence[NewJob], created: Sequence[str]) -> int: ...

    async def enqueue_claiming(self, jobs: Sequence[NewJob], created: Sequence[str], ask: ClaimAsk) -> list[Envelope]: ...

    @property
    def claims_on_enqueue(self) -> bool: ...

    async def claim(self, n: int, *, node: str, lease_ms: int, max_running: int = 0) -> list[Envelope]: ...

    async def wait_wake(self, block_s: int) -> bool: ...

    async def finish(self, outcomes: Sequence[Applied], events: Sequence[tuple[str, str, str]] = ()) -> None: ...

    async def publish(self, events: Sequence[tuple[str, str, str]]) -> None: ...
