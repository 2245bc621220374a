"""The Redis store's calls (a part of RedisStore, kept apart for size): thread hops, one script
call on a shard, and a call cut by shard: one script call per shard concerned, all in one thread
hop, or (`_each_shard_apart`) each in a thread of its own, so that a dead master holds back
nothing but its own shards."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import trio

from ..failures import StoreUnavailable
from ..shards import ShardMap
from .redis_conn import Connection
from .redis_native import NativeRedis

T = TypeVar("T")


class ShardCalls:
    shards: ShardMap
    _conn: Connection
    _native: NativeRedis | None
    _channel: str
    _running: set[tuple[str, int]]  # (script, shard) called apart, not answered yet

    async def _run(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        return await self._conn.run(fn, abandon=abandon)

    def _call(self, name: str, base: str, args: list[Any]) -> Any:
        """Blocking: one script call on the shard whose key prefix is `base`."""
        return self._conn.call(name, base, [self._channel, *args])

    async def _script(self, name: str, base: str, args: list[Any]) -> Any:
        if self._native is not None:
            return await self._native.evalsha(self._conn.scripts[name], [base], [self._channel, *args])
        return await self._run(lambda: self._call(name, base, args))

    async def _each_shard(self, name: str, groups: dict[int, list[Any]], head: Sequence[Any] = ()) -> list[Any]:
        """One script call per shard in `groups` (shard -> its arguments after `head`), in one
        thread hop; their answers, in the order of the groups."""
        bases = self.shards.bases()
        if self._native is not None:  # one shard: at most one call
            return [await self._script(name, bases[index], [*head, *args]) for index, args in groups.items()]

        def work() -> list[Any]:
            return [self._call(name, bases[index], [*head, *args]) for index, args in groups.items()]

        return await self._run(work) if groups else []

    async def _each_shard_apart(
        self, name: str, groups: dict[int, list[Any]], head: Sequence[Any], *, within: float
    ) -> list[Any]:
        """Like `_each_shard`, but each shard's call in a thread of its own, all at once: a shard
        whose master is down, or that has not answered within `within` seconds, answers None
        and the others answer as usual (redis-py retries a dead master for seconds, and one
        dead master must not stop the heartbeats of every shard). A shard whose call from
        before is still running is not called again. Raises only when no shard answered."""
        if self._native is not None:
            return await self._each_shard(name, groups, head)
        bases = self.shards.bases()
        answers: dict[int, Any] = {}

        async def one(index: int, args: list[Any]) -> None:
            if (name, index) in self._running:
                return
            self._running.add((name, index))
            started = False

            def work() -> Any:
                nonlocal started
                started = True
                try:
                    return self._call(name, bases[index], [*head, *args])
                finally:  # in the thread: an abandoned call holds its place until it ends
                    self._running.discard((name, index))

            try:
                with trio.move_on_after(within):
                    answers[index] = await self._run(work, abandon=True)
            except StoreUnavailable:
                pass
            finally:
                if not started:  # given up before a thread took it (waiting for the limiter)
                    self._running.discard((name, index))

        async with trio.open_nursery() as nursery:
            for index, args in groups.items():
                nursery.start_soon(one, index, args)
        if groups and not answers:
            raise StoreUnavailable(f"Redis unavailable: no shard answered {name} within {within:g} s")
        return [answers.get(index) for index in groups]

    async def _every_shard(self, name: str, args: list[Any]) -> list[Any]:
        return await self._each_shard(name, {i: list(args) for i in range(self.shards.count)})

    def _group(self, items: Iterable[tuple[str, Sequence[Any]]]) -> dict[int, list[Any]]:
        """(tenant, arguments) -> shard -> the arguments of its tenants, concatenated in order."""
        groups: dict[int, list[Any]] = defaultdict(list)
        for tenant, args in items:
            groups[self.shards.of(tenant)].extend(args)
        return groups
