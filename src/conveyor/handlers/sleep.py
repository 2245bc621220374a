"""The `sleep` job: waits delayMs, cancellably, reporting its progress when it waits a second or
more. Used for demos, tests and benchmarks."""

from __future__ import annotations

from typing import Any

import trio

from ..config import Config
from ..model import Envelope
from ..progress import report
from .base import FieldError, Handler, Registry

PROGRESS_FROM_MS = 1000
PROGRESS_STEP_S = 0.25


def register(registry: Registry, config: Config) -> None:
    max_ms = config.sleep_max_ms

    def validate(payload: dict[str, Any]) -> list[FieldError]:
        delay = payload.get("delayMs")
        if isinstance(delay, bool) or not isinstance(delay, int):
            return [FieldError("delayMs", "must be an integer number of milliseconds")]
        if not 0 <= delay <= max_ms:
            return [FieldError("delayMs", f"must be between 0 and {max_ms}")]
        return []

    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        delay = payload["delayMs"]
        if delay >= PROGRESS_FROM_MS:
            start = trio.current_time()
            deadline = start + delay / 1000
            while (now := trio.current_time()) < deadline:
                elapsed_ms = int((now - start) * 1000)
                report(100 * elapsed_ms / delay, f"{elapsed_ms} of {delay} ms")
                await trio.sleep(min(deadline - now, PROGRESS_STEP_S))
        elif delay:
            await trio.sleep(delay / 1000)
        else:
            await trio.lowlevel.checkpoint()
        return {"sleptMs": delay}

    registry.register(
        Handler("sleep", validate, run, default_timeout_ms=lambda p: int(p["delayMs"]) + 30_000)
    )
