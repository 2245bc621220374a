"""Progress reports from a running handler: `report(percent, message)`.

A handler calls `conveyor.progress.report(40, "resized 4 of 10")` from its own task, or from a
thread it runs with trio.to_thread; outside a job it does nothing. Reports are throttled: the
node's Flusher sends the latest report of each running attempt at most once per
CONVEYOR_PROGRESS_INTERVAL_MS, and drops an attempt's unsent report when it ends.
They become JOB_PROGRESS events on the tenant's feed. Progress is advisory: a report the recorder
has no room for is skipped (a later one, or the job's end, follows), never waited for.
"""

from __future__ import annotations

import math
from contextvars import ContextVar, Token

import trio

from .model import Envelope, Progress, Record

MAX_MESSAGE = 200

# the running attempt of this task (and of the threads it starts): its job, and the node's Flusher
_current: ContextVar[tuple[Flusher, Envelope] | None] = ContextVar("conveyor_progress", default=None)


def report(progress: float, message: str = "") -> None:
    """Report how far the current job is: progress from 0 to 100, and a short message."""
    if isinstance(progress, bool) or not isinstance(progress, int | float) or not (
        math.isfinite(progress) and 0 <= progress <= 100
    ):
        raise ValueError(f"progress must be a number from 0 to 100, got {progress!r}")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    current = _current.get()
    if current is None:
        return
    flusher, job = current
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:  # a worker thread of the job's (trio.to_thread copies the context)
        trio.from_thread.run_sync(flusher.keep, job, progress, message[:MAX_MESSAGE])
    else:
        flusher.keep(job, progress, message[:MAX_MESSAGE])


class _Reporting:
    """Flusher.reporting's context manager: a class, not a generator, since every job enters one."""

    __slots__ = ("flusher", "job", "token")
    token: Token[tuple[Flusher, Envelope] | None]

    def __init__(self, flusher: Flusher, job: Envelope) -> None:
        self.flusher, self.job = flusher, job

    def __enter__(self) -> None:
        self.token = _current.set((self.flusher, self.job))

    def __exit__(self, *exc: object) -> None:
        _current.reset(self.token)
        self.flusher.pending.pop((self.job.id, self.job.attempt), None)


class Flusher:
    """The node's progress reports on their way to the recorder: at most one per attempt per
    interval, the latest. One task for the whole node, so that a job that reports nothing costs
    nothing."""

    def __init__(self, records: trio.MemorySendChannel[Record], interval_s: float) -> None:
        self.records = records
        self.interval_s = interval_s
        self.pending: dict[tuple[str, int], Progress] = {}
        self.wake = trio.Event()

    def reporting(self, job: Envelope) -> _Reporting:
        """Within: report() reports for this attempt. After: its unsent report is dropped."""
        return _Reporting(self, job)

    def keep(self, job: Envelope, progress: float, message: str) -> None:
        self.pending[(job.id, job.attempt)] = Progress(job, progress, message)
        self.wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self.records:
            while True:
                await self.wake.wait()
                self.wake = trio.Event()
                reports, self.pending = list(self.pending.values()), {}
                for report in reports:
                    try:
                        self.records.send_nowait(report)
                    except trio.WouldBlock:
                        pass  # advisory: skipped while the recorder is behind
                await trio.sleep(self.interval_s)
