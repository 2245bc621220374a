"""Progress reports from a running handler: `report(percent, message)`.

A handler calls `conveyor.progress.report(40, "resized 4 of 10")` from its own task, or from a
thread it runs with trio.to_thread; outside a job it does nothing. Reports are throttled per job:
the first goes out at once, then at most one per CONVEYOR_PROGRESS_INTERVAL_MS, always the latest.
They become JOB_PROGRESS events on the tenant's feed. Progress is advisory: a report the recorder
has no room for is skipped (a later one, or the job's end, follows), never waited for.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Any

import trio

from .model import Envelope, Progress

MAX_MESSAGE = 200

_current: ContextVar[Reporter | None] = ContextVar("conveyor_progress", default=None)


def report(progress: float, message: str = "") -> None:
    """Report how far the current job is: progress from 0 to 100, and a short message."""
    if isinstance(progress, bool) or not isinstance(progress, int | float) or not (
        math.isfinite(progress) and 0 <= progress <= 100
    ):
        raise ValueError(f"progress must be a number from 0 to 100, got {progress!r}")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    reporter = _current.get()
    if reporter is None:
        return
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:  # a worker thread of the job's (trio.to_thread copies the context)
        trio.from_thread.run_sync(reporter.set, progress, message[:MAX_MESSAGE])
    else:
        reporter.set(progress, message[:MAX_MESSAGE])


class Reporter:
    """One attempt's reports: keeps the latest, and sends it to the recorder, throttled."""

    def __init__(self, job: Envelope, records: trio.MemorySendChannel[Any], interval_s: float) -> None:
        self.job = job
        self.records = records
        self.interval_s = interval_s
        self.latest: tuple[float, str] | None = None
        self.dirty = trio.Event()

    def set(self, progress: float, message: str) -> None:
        self.latest = (progress, message)
        self.dirty.set()

    async def run(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty = trio.Event()
            assert self.latest is not None
            try:
                self.records.send_nowait(Progress(self.job, *self.latest))
            except trio.WouldBlock:
                pass  # advisory: skipped while the recorder is behind
            await trio.sleep(self.interval_s)

    def activate(self) -> Any:
        """Make this the current job's reporter (in this task and the threads it starts)."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: Any) -> None:
        _current.reset(token)
