"""Job types that misbehave: one crashes in its worker thread, one hangs in a thread that ignores
cancellation. Loaded through CONVEYOR_HANDLER_MODULES by the poison-job test."""

from __future__ import annotations

import time
from typing import Any

import trio

from conveyor import Config, Envelope, FieldError, Handler, Registry


def register(registry: Registry, config: Config) -> None:
    def no_check(payload: dict[str, Any]) -> list[FieldError]:
        return []

    async def crash(job: Envelope, payload: dict[str, Any]) -> Any:
        def boom() -> None:
            raise MemoryError("the worker thread fell over")

        return await trio.to_thread.run_sync(boom)

    async def hang(job: Envelope, payload: dict[str, Any]) -> Any:
        # a thread that never looks at cancellation; abandoned when the attempt's deadline passes
        return await trio.to_thread.run_sync(time.sleep, 30, abandon_on_cancel=True)

    registry.register(Handler("crash", no_check, crash, default_timeout_ms=lambda p: 5000))
    registry.register(Handler("hang", no_check, hang, default_timeout_ms=lambda p: 200))
