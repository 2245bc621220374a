"""The Redis store's reads of the tenants' feeds and figures (a part of RedisStore, kept apart
for size): what the broadcaster, the WebSocket catch-up, GET /jobs/{id}/events and the dashboard
read. Each reads the keys of one tenant's shard, except read_streams, which reads any."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..shards import ShardMap, key_slot
from .redis_conn import Subscription
from .redis_native import NativeRedis

T = TypeVar("T")

JOB_EVENTS_MAX = 1000  # a job's newest events that GET /jobs/{id}/events returns


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def groups_of(flat: Sequence[Any], start: int, width: int) -> list[tuple[Any, ...]]:
    return [tuple(flat[i : i + width]) for i in range(start, len(flat), width)]


class FeedReads:
    client: Any
    shards: ShardMap
    _feeds: Subscription | None
    _native: NativeRedis | None = None

    def tkey(self, tenant: str, *parts: str) -> str:
        raise NotImplementedError

    async def _run(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        raise NotImplementedError

    async def _script(self, name: str, base: str, args: list[Any]) -> Any:
        raise NotImplementedError

    async def read_feed(
        self, tenant: str, after: str, count: int
    ) -> tuple[str, list[tuple[str, str, str]]]:
        """Up to count events of a tenant's feed after an id, as (id, event json, previous id),
        and the feed's newest id ('0-0': none), read at one instant."""
        flat = await self._script("feed", self.shards.tenant_base(tenant), [tenant, after, count])
        return str(flat[0]), [(str(i), str(d), str(v)) for i, d, v in groups_of(flat, 1, 3)]

    @property
    def reads_end_early(self) -> bool:
        """Whether cancelling a read_streams costs nothing but the connection it used: one XREAD
        on a single Redis over trio's sockets. Not in a worker thread (an abandoned XREAD holds a
        pooled connection until it ends), nor with more than one shard, whose read waits for a
        feed wake-up that a cancelled wait takes with it (the next read would wait its time)."""
        return self._native is not None

    async def read_streams(
        self, positions: dict[str, str], block_ms: int
    ) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
        """Entries after the given ids of these streams (full keys), blocking up to block_ms
        (server-side) while there are none: [(key, [(id, fields)])].

        With more than one shard (a cluster refuses an XREAD over several slots) it reads the
        streams of one shard per XREAD, without blocking, and waits for a feed wake-up when none
        had entries."""
        if self._native is not None:  # one shard on a single Redis: no thread hop
            flat = await self._native.execute(
                "XREAD", "COUNT", 500, "BLOCK", block_ms, "STREAMS", *positions, *positions.values(),
                wait_s=block_ms / 1000,
            )
            return [
                (str(key), [(str(entry), pairs(fields)) for entry, fields in entries])
                for key, entries in flat or []
            ]
        if self._feeds is None:
            got: Any = await self._run(
                lambda: self.client.xread(positions, count=500, block=block_ms),
                abandon=True,
            )
            return [(str(key), entries) for key, entries in got or []]
        by_slot: dict[int, dict[str, str]] = defaultdict(dict)
        for key, last in positions.items():
            by_slot[key_slot(key)][key] = last

        def read() -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
            return [
                (str(key), entries)
                for group in by_slot.values()
                for key, entries in self.client.xread(group, count=500) or []
            ]

        if found := await self._run(read):
            return found
        await self._run(lambda: self._feeds.wait(block_ms / 1000), abandon=True)  # type: ignore[union-attr]
        return await self._run(read)

    async def feed_heads(self, tenants: Sequence[str]) -> dict[str, str]:
        """The newest event id of each tenant's feed ('0-0': none)."""

        def work() -> list[Any]:
            with self.client.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    pipe.get(self.tkey(tenant, "feedhead", tenant))
                return list(pipe.execute())

        heads = await self._run(work) if tenants else []
        return {t: str(h) if h else "0-0" for t, h in zip(tenants, heads, strict=True)}

    async def now_event_id(self) -> str:
        """A stream id for "now" by Redis's clock: reading after it misses nothing from now on."""
        now: Any = await self._run(self.client.time)
        seconds, micros = now
        return f"{seconds * 1000 + micros // 1000}-0"

    async def job_events(self, tenant: str, job_id: str) -> list[tuple[str, str]]:
        """A job's events still in its tenant's feed, oldest first (its newest JOB_EVENTS_MAX),
        found through the tenant's event index: the cost is the job's events, not the feed's."""
        flat = await self._script("jobevents", self.shards.tenant_base(tenant), [tenant, job_id, JOB_EVENTS_MAX])
        return [(str(i), str(d)) for i, d in groups_of(flat, 0, 2)]

    async def queued(self, tenant: str) -> int:
        """The tenant's unfinished jobs that Redis knows of."""
        value = await self._run(lambda: self.client.hget(self.tkey(tenant, "queued"), tenant))
        return int(value or 0)

    async def history(self, tenant: str) -> tuple[int, int, list[dict[str, str]]]:
        """The tenant's history slots (history.lua): now in ms, the hour, and the fields of that
        hour and of the one before."""
        now, hour, *hashes = await self._script("history", self.shards.tenant_base(tenant), [tenant])
        return int(now), int(hour), [pairs(h) for h in hashes]

    async def depth(self, tenant: str) -> tuple[int, int]:
        """The tenant's unfinished jobs, and those of them running, by the dispatch index."""

        def work() -> tuple[int, int]:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(self.tkey(tenant, "queued"), tenant)
                pipe.scard(self.tkey(tenant, "running", tenant))
                queued, running = pipe.execute()
            return int(queued or 0), int(running or 0)

        return await self._run(work)

