"""Calls cut by shard, each apart (stores/redis_shards.py, the heartbeat's): a shard that does not
answer in time answers None while the others answer, it is not called again while its call still
runs, and it is called again once that call ended, or when it never got a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio

from conveyor.failures import StoreUnavailable
from conveyor.shards import ShardMap
from conveyor.stores.redis_shards import ShardCalls

T = TypeVar("T")


class Calls(ShardCalls):
    """Three shards; `_call` answers at once, except on a shard in `slow`, which waits for its
    event; `_run` runs in a thread, or (`no_thread`) waits for a thread forever."""

    def __init__(self) -> None:
        self.shards = ShardMap("p", 3)
        self._native = None
        self._channel = ""
        self._running = set()
        self.slow: dict[str, threading.Event] = {}
        self.called: list[str] = []
        self.no_thread = False

    async def _run(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        if self.no_thread:  # as when every token of the limiter is taken
            await trio.sleep_forever()
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=abandon)

    def _call(self, name: str, base: str, args: list[Any]) -> Any:
        self.called.append(base)
        if base in self.slow:
            self.slow[base].wait(10)
        return [base, *args]


async def test_a_slow_shard_answers_none_and_holds_back_no_other() -> None:
    calls = Calls()
    bases = calls.shards.bases()
    calls.slow[bases[1]] = threading.Event()
    try:
        answers = await calls._each_shard_apart("heartbeat", {0: ["a"], 1: ["b"], 2: ["c"]}, ("n",), within=0.2)
        assert answers == [[bases[0], "n", "a"], None, [bases[2], "n", "c"]]
        calls.called.clear()
        # its call still runs: it is not called again, the others are
        answers = await calls._each_shard_apart("heartbeat", {0: ["a"], 1: ["b"]}, ("n",), within=0.2)
        assert answers == [[bases[0], "n", "a"], None] and calls.called == [bases[0]]
    finally:
        calls.slow[bases[1]].set()
    with trio.fail_after(5):  # once it ended, it is called again
        while ("heartbeat", 1) in calls._running:  # noqa: ASYNC110  (a thread clears it)
            await trio.sleep(0.01)
    del calls.slow[bases[1]]
    assert await calls._each_shard_apart("heartbeat", {1: ["b"]}, ("n",), within=1) == [[bases[1], "n", "b"]]


async def test_a_call_that_never_got_a_thread_does_not_stop_the_next() -> None:
    calls = Calls()
    calls.no_thread = True
    with pytest.raises(StoreUnavailable, match="no shard answered heartbeat"):
        await calls._each_shard_apart("heartbeat", {0: ["a"]}, ("n",), within=0.05)
    calls.no_thread = False
    base = calls.shards.bases()[0]
    assert await calls._each_shard_apart("heartbeat", {0: ["a"]}, ("n",), within=1) == [[base, "n", "a"]]
