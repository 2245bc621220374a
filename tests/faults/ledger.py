"""The `ledger` job type of the fault suite: every execution is written down in Redis.

`<prefix>:ledger:starts` (in LEDGER_REDIS_URL, or the queue's Redis) is a list of "job-id node-id
unix-time" per execution started, and
`<prefix>:ledger:ends` one of "job-id node-id outcome" per execution that ended (completed or
cancelled). Loaded into real `conveyor serve` processes through CONVEYOR_HANDLER_MODULES.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
import trio

from conveyor import Config, Envelope, FieldError, Handler, Registry


def register(registry: Registry, config: Config) -> None:
    # the ledger may live in another Redis than the queue's, so that losing that one keeps it
    client = redis.Redis.from_url(os.environ.get("LEDGER_REDIS_URL") or config.redis_url)
    starts, ends = f"{config.redis_prefix}:ledger:starts", f"{config.redis_prefix}:ledger:ends"
    node = config.node_id or "?"

    def validate(payload: dict[str, Any]) -> list[FieldError]:
        ms = payload.get("ms")
        return [] if isinstance(ms, int) and 0 <= ms <= 600_000 else [FieldError("ms", "0-600000")]

    async def note(key: str, entry: str) -> None:
        await trio.to_thread.run_sync(client.rpush, key, entry)

    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        await note(starts, f"{job.id} {node} {time.time():.6f}")
        outcome = "cancelled"
        try:
            await trio.sleep(payload["ms"] / 1000)
            outcome = "completed"
        finally:
            # shielded: a cancellation (lost lease, cancel request) while the end is written down
            # must not leave an execution without its end
            with trio.CancelScope(shield=True):
                await note(ends, f"{job.id} {node} {outcome}")
        return {"node": node}

    registry.register(Handler("ledger", validate, run, default_timeout_ms=lambda p: p["ms"] + 60_000))
