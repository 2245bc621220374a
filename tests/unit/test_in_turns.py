"""A long page is built in turns: other tasks run between its parts (jobs.in_turns)."""

from __future__ import annotations

import trio

from conveyor.jobs import in_turns


async def test_other_tasks_run_between_the_turns() -> None:
    ticks = 0
    seen_at: list[int] = []

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        async for item in in_turns(range(100), turn=20):
            seen_at.append(ticks)
            assert item == len(seen_at) - 1
        nursery.cancel_scope.cancel()
    assert len(seen_at) == 100
    # within a turn nothing else runs; between turns the other task does (trio runs a batch's
    # tasks in either order, so two turns may see the same count, never all of them)
    for start in range(0, 100, 20):
        assert len(set(seen_at[start:start + 20])) == 1
    assert seen_at == sorted(seen_at) and len(set(seen_at)) >= 3
