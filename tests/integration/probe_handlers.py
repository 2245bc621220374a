"""A `probe` job type that records how many jobs of each tenant run at once, across every node
of the test process (nodes started in-process share this module)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from conveyor import Config, Envelope, FieldError, Handler, Registry

RUNNING: Counter[str] = Counter()
PEAK: Counter[str] = Counter()
STARTED: list[tuple[str, float]] = []
ORDER: list[str] = []  # ids of the jobs, in the order they started


def reset() -> None:
    RUNNING.clear()
    PEAK.clear()
    STARTED.clear()
    ORDER.clear()


def register(registry: Registry, config: Config) -> None:
    def validate(payload: dict[str, Any]) -> list[FieldError]:
        ms = payload.get("ms")
        return [] if isinstance(ms, int) and 0 <= ms <= 60_000 else [FieldError("ms", "0-60000")]

    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        RUNNING[job.tenant_id] += 1
        PEAK[job.tenant_id] = max(PEAK[job.tenant_id], RUNNING[job.tenant_id])
        STARTED.append((job.tenant_id, trio.current_time()))
        ORDER.append(job.id)
        try:
            await trio.sleep(payload["ms"] / 1000)
        finally:
            RUNNING[job.tenant_id] -= 1
        return None

    registry.register(Handler("probe", validate, run, default_timeout_ms=lambda p: 70_000))
