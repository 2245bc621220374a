"""A long page is built in turns, a batch is checked in steps: other tasks run between their
parts (jobs.in_turns, jobs.stepped)."""

from __future__ import annotations

import trio

from conveyor.config import Config
from conveyor.handlers import build_registry
from conveyor.jobs import in_turns, stepped
from conveyor.validation import BATCH_STEP, parse_batch_in_steps


class Ticker:
    """Another task of the event loop, counting its turns."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await trio.lowlevel.checkpoint()


async def test_other_tasks_run_between_the_turns() -> None:
    other = Ticker()
    seen_at: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other.run)
        await trio.lowlevel.checkpoint()
        async for item in in_turns(range(100), turn=20):
            seen_at.append(other.ticks)
            assert item == len(seen_at) - 1
        nursery.cancel_scope.cancel()
    assert len(seen_at) == 100
    # within a turn nothing else runs; between turns the other task does (trio runs a batch's
    # tasks in either order, so two turns may see the same count, never all of them)
    for start in range(0, 100, 20):
        assert len(set(seen_at[start:start + 20])) == 1
    assert seen_at == sorted(seen_at) and len(set(seen_at)) >= 3


async def test_other_tasks_run_between_the_steps_of_a_batch() -> None:
    # POST /jobs/batch checks and builds its jobs with jobs.stepped: not one long step of the loop
    config = Config(sleep_max_ms=10_000)
    body = {"jobs": [{"tenantId": "t", "type": "sleep", "payload": {"delayMs": 1}}] * 1000}
    other = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other.run)
        await trio.lowlevel.checkpoint()
        before = other.ticks
        jobs = await stepped(parse_batch_in_steps(body, build_registry(config), config))
        nursery.cancel_scope.cancel()
    assert len(jobs) == 1000
    assert other.ticks - before >= 1000 // BATCH_STEP
