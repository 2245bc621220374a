"""Redis store: the dispatch index. Lua scripts from lua/, registered once, called by name.

Each method is one thread hop and one round trip carrying a batch. Blocking reads use a short
server-side timeout because a thread cannot be cancelled. Keys all live under one prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import attrs
import redis
import trio

from ..failures import StoreUnavailable
from ..model import PRIORITY_DEFAULT, Envelope, NewJob
from ..storable import dumps

T = TypeVar("T")

SCRIPTS = (
    "enqueue", "claim", "finish", "heartbeat", "reap", "promote", "reconcile", "lock", "admit",
    "cancel", "publish", "feed", "jobevents", "history", "upgrade",
)
JOB_EVENTS_MAX = 1000  # a job's newest events that GET /jobs/{id}/events returns


@attrs.frozen
class Applied:
    """An outcome for finish.lua: what to do with the job's envelope at this attempt, and the
    events to publish if (and only if) that happens."""

    id: str
    attempt: int
    action: str  # done | retry | handback | requeue
    delay_ms: int = 0
    events: tuple[str, ...] = ()


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _envelopes(flat: Sequence[Any], start: int, width: int) -> list[tuple[Any, ...]]:
    return [tuple(flat[i : i + width]) for i in range(start, len(flat), width)]


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        pool_size: int = 16,
        feed_events: int = 10_000,
        feed_seconds: float = 3_600.0,
    ) -> None:
        self.prefix = prefix
        # every script that emits job events takes the feeds' retention after the prefix
        self._feed = [feed_events, int(feed_seconds * 1000)]
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=2,
            socket_timeout=10,
            socket_connect_timeout=2,
            health_check_interval=15,
            decode_responses=True,
        )
        self.client = redis.Redis(connection_pool=pool)
        self._limiter = trio.CapacityLimiter(pool_size)
        lua = resources.files(__package__).joinpath("lua")
        lib = lua.joinpath("_lib.lua").read_text()
        self._scripts = {
            name: self.client.register_script(lib + lua.joinpath(f"{name}.lua").read_text())
            for name in SCRIPTS
        }

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def _run(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        def work() -> T:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise StoreUnavailable(f"Redis unavailable: {exc}") from exc

        return await trio.to_thread.run_sync(
            work, limiter=self._limiter, abandon_on_cancel=abandon
        )

    async def _script(self, name: str, args: list[Any]) -> Any:
        script = self._scripts[name]
        return await self._run(lambda: script(keys=[], args=[self.prefix, *args]))

    async def close(self) -> None:
        with trio.move_on_after(5, shield=True):
            await trio.to_thread.run_sync(self.client.close, abandon_on_cancel=True)

    async def ping(self) -> None:
        await self._run(self.client.ping)

    def connections(self) -> int:
        """Connections the pool holds open now (it grows under load up to its size)."""
        return len(getattr(self.client.connection_pool, "_connections", ()))

    async def enqueue(self, jobs: Sequence[NewJob], created: Sequence[str]) -> int:
        """Dispatch new jobs and publish their creation events (PENDING, as JSON text, one per
        job); returns how many were dispatched (a job dispatched before is skipped)."""
        args: list[Any] = [*self._feed]
        for j, event in zip(jobs, created, strict=True):
            args += [
                j.id, j.tenant_id, j.type, j.payload_json, j.max_attempts, j.timeout_ms, event,
                j.priority, j.run_at_ms, j.delay_ms,
            ]
        return int(await self._script("enqueue", args))

    async def upgrade(self) -> int:
        """Bring the dispatch index of an earlier version up to this one's (upgrade.lua); returns
        how many ready jobs moved."""
        return int(await self._script("upgrade", []))

    async def claim(
        self, n: int, *, node: str, lease_ms: int, max_running: int = 0
    ) -> list[Envelope]:
        """Claim up to n jobs; max_running is the tenants' default running cap (0: none)."""
        flat = await self._script("claim", [n, node, lease_ms, max_running])
        return [
            Envelope(id, tenant, type_, json.loads(payload), int(a), int(m), int(o), int(w), int(k or 0))
            for id, tenant, type_, payload, a, m, o, w, k in _envelopes(flat, 0, 9)
        ]

    async def finish(
        self, outcomes: Sequence[Applied], events: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Apply outcomes to the dispatch index, each with its events, and publish the other
        (tenant, job id, event json) events, in one script call."""
        args: list[Any] = [*self._feed, len(outcomes)]
        for o in outcomes:
            args += [o.id, o.attempt, o.action, o.delay_ms, len(o.events), *o.events]
        for tenant, job_id, data in events:
            args += [tenant, job_id, data]
        await self._script("finish", args)

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], *, node: str, lease_ms: int
    ) -> list[tuple[str, str]]:
        """Extend these leases; returns (job id, 'lost' | 'cancel') of the attempts to stop."""
        args: list[Any] = [node, lease_ms]
        for job_id, attempt in leases:
            args += [job_id, attempt]
        return [(str(i), str(why)) for i, why in _envelopes(await self._script("heartbeat", args), 0, 2)]

    async def cancel(self, job_id: str, *, lease_ms: int) -> tuple[str, int]:
        """Stop a job in the dispatch index: ('parked', attempt) when it was waiting (it is held
        for the canceller, who drops it with `finish`), ('running', attempt) when it runs (its
        node is told to stop it) or ('absent', 0)."""
        verdict, attempt = await self._script("cancel", [job_id, lease_ms])
        return str(verdict), int(attempt)

    async def publish(self, events: Sequence[tuple[str, str, str]]) -> None:
        """Publish (tenant, job id, event json) job events to the tenants' feeds, in one round
        trip."""
        args: list[Any] = [*self._feed]
        for tenant, job_id, data in events:
            args += [tenant, job_id, data]
        await self._script("publish", args)

    async def read_feed(
        self, tenant: str, after: str, count: int
    ) -> tuple[str, list[tuple[str, str, str]]]:
        """Up to count events of a tenant's feed after an id, as (id, event json, previous id),
        and the feed's newest id ('0-0': none), read at one instant."""
        flat = await self._script("feed", [tenant, after, count])
        return str(flat[0]), [(str(i), str(d), str(v)) for i, d, v in _envelopes(flat, 1, 3)]

    async def reap(self, limit: int, *, lease_ms: int) -> list[tuple[str, Envelope]]:
        flat = await self._script("reap", [limit, lease_ms])
        return [
            (verdict, Envelope(id, tenant, type_, json.loads(payload), int(a), int(m), int(o), retries=int(k or 0)))
            for verdict, id, tenant, type_, payload, a, m, o, k in _envelopes(flat, 0, 9)
        ]

    async def promote(self, limit: int) -> tuple[int, int]:
        moved, next_due_ms = await self._script("promote", [limit])
        return int(moved), int(next_due_ms)

    async def reconcile(self, rows: Sequence[dict[str, Any]]) -> int:
        """Dispatch again those of these non-terminal jobs that Redis does not know."""
        args: list[Any] = []
        for r in rows:
            args += [
                r["id"], r["tenant_id"], r["type"], dumps(r["payload"]), r["status"],
                r["attempts"], r["max_attempts"], r["timeout_ms"], r["due_in_ms"], r.get("retries") or 0,
                r.get("priority", PRIORITY_DEFAULT),
            ]
        return int(await self._script("reconcile", args)) if rows else 0

    async def missing(self, ids: Sequence[str]) -> list[str]:
        """Which of these jobs have no envelope in Redis (one round trip)."""

        def work() -> list[str]:
            with self.client.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.exists(self.key("job", job_id))
                found = pipe.execute()
            return [job_id for job_id, exists in zip(ids, found, strict=True) if not exists]

        return await self._run(work) if ids else []

    async def try_lock(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Take (or keep) a named lock for ttl_ms; True when `holder` has it."""
        return bool(await self._script("lock", [name, holder, ttl_ms]))

    async def wait_wake(self, block_s: int) -> bool:
        """Block until an enqueue pushes a wake-up token, or block_s passes (server-side)."""
        got = await self._run(
            lambda: self.client.blpop([self.key("wake")], timeout=block_s), abandon=True
        )
        return got is not None

    async def read_streams(
        self, positions: dict[str, str], block_ms: int
    ) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
        """Entries after the given ids of these streams (full keys), blocking up to block_ms
        (server-side) while there are none: [(key, [(id, fields)])]."""
        got: Any = await self._run(
            lambda: self.client.xread(positions, count=500, block=block_ms),  # type: ignore[arg-type]
            abandon=True,
        )
        return [(str(key), entries) for key, entries in got or []]

    async def feed_heads(self, tenants: Sequence[str]) -> dict[str, str]:
        """The newest event id of each tenant's feed ('0-0': none)."""
        heads: Any = await self._run(
            lambda: self.client.mget([self.key("feedhead", t) for t in tenants])
        )
        return {t: str(h) if h else "0-0" for t, h in zip(tenants, heads, strict=True)}

    async def now_event_id(self) -> str:
        """A stream id for "now" by Redis's clock: reading after it misses nothing from now on."""
        now: Any = await self._run(self.client.time)
        seconds, micros = now
        return f"{seconds * 1000 + micros // 1000}-0"

    async def admit(
        self, requests: Sequence[tuple[str, int, int, float, int, int, int]]
    ) -> list[tuple[str, int]]:
        """Admission of (tenant, jobs, bytes, rate, burst, max_queued, max_queued_bytes)
        submissions, in one call.

        Per submission: ('ok' | 'queue' | 'bytes' | 'rate' | 'burst', ms to wait before trying
        again).
        """
        args: list[Any] = []
        for tenant, jobs, size, rate, burst, max_queued, max_bytes in requests:
            args += [tenant, jobs, size, repr(float(rate)), burst, max_queued, max_bytes]
        flat = await self._script("admit", args)
        return [(str(v), int(ms)) for v, ms in _envelopes(flat, 0, 2)]

    async def queued(self, tenant: str) -> int:
        """The tenant's unfinished jobs that Redis knows of."""
        value = await self._run(lambda: self.client.hget(self.key("queued"), tenant))
        return int(value or 0)

    async def history(self, tenant: str) -> tuple[int, int, list[dict[str, str]]]:
        """The tenant's history slots (history.lua): now in ms, the hour, and the fields of that
        hour and of the one before."""
        now, hour, *hashes = await self._script("history", [tenant])
        return int(now), int(hour), [_pairs(h) for h in hashes]

    async def depth(self, tenant: str) -> tuple[int, int]:
        """The tenant's unfinished jobs, and those of them running, by the dispatch index."""

        def work() -> tuple[int, int]:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(self.key("queued"), tenant)
                pipe.scard(self.key("running", tenant))
                queued, running = pipe.execute()
            return int(queued or 0), int(running or 0)

        return await self._run(work)

    async def job_events(self, tenant: str, job_id: str) -> list[tuple[str, str]]:
        """A job's events still in its tenant's feed, oldest first (its newest JOB_EVENTS_MAX),
        found through the tenant's event index: the cost is the job's events, not the feed's."""
        flat = await self._script("jobevents", [tenant, job_id, JOB_EVENTS_MAX])
        return [(str(i), str(d)) for i, d in _envelopes(flat, 0, 2)]

    async def set_running_caps(self, caps: dict[str, int]) -> None:
        """Replace the per-tenant running caps that the claim script reads."""

        def work() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self.key("maxrun"))
                if caps:
                    pipe.hset(self.key("maxrun"), mapping=caps)  # type: ignore[arg-type]
                pipe.execute()

        await self._run(work)

    async def put_ticket(self, digest: str, value: str, ttl_ms: int) -> None:
        await self._run(lambda: self.client.set(self.key("ticket", digest), value, px=ttl_ms))

    async def take_ticket(self, digest: str) -> str | None:
        """A ticket's value, once: it is deleted as it is read."""
        value: Any = await self._run(lambda: self.client.getdel(self.key("ticket", digest)))
        return value
