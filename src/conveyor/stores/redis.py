"""Redis store: the dispatch index, cut into shards (conveyor.shards) over one Redis or a Redis /
Valkey Cluster (redis_conn.py). Lua scripts from lua/, registered once, called by name.

Every script runs on one shard: its KEYS[1] is the shard's key prefix (a hash tag in a cluster),
and each key it touches starts with that prefix, so the cluster routes the call to one master and
accepts it (a key of another slot would be refused there). ARGV[1] is the channel prefix of the
wake-ups published with more than one shard ('' with one). A call that concerns several tenants
is cut by shard: one script call per shard concerned, all in one thread hop (heartbeats: each in
a thread of its own, redis_shards.py); on one shard that is one call, as before shards. Global
keys (locks, tickets, the control stream) are plain keys under the prefix.

Blocking reads use a short server-side timeout because a thread cannot be cancelled.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ..model import PRIORITY_DEFAULT, Envelope, NewJob
from ..shards import CLUSTER_DEFAULT_SHARDS, Rotation, ShardMap
from ..storable import dumps
from . import redis_native
from .redis_conn import OUTAGES, Connection, Subscription, detect_cluster, is_cluster
from .redis_feeds import FeedReads, groups_of
from .redis_shards import ShardCalls


@attrs.frozen
class Applied:
    """An outcome for finish.lua: what to do with the job's envelope at this attempt, and the
    events to publish if (and only if) that happens."""

    tenant: str
    id: str
    attempt: int
    action: str  # done | retry | handback | requeue
    delay_ms: int = 0
    events: tuple[str, ...] = ()


@attrs.frozen
class ClaimAsk:
    """Jobs to claim for a node along with a dispatch (RedisStore.enqueue_claiming)."""

    n: int
    node: str
    lease_ms: int
    max_running: int = 0  # the tenants' default running cap (0: none)


def _claimed(flat: Sequence[Any]) -> list[Envelope]:
    return [
        Envelope(id, tenant, type_, json.loads(payload), int(a), int(m), int(o), int(w), int(k or 0))
        for id, tenant, type_, payload, a, m, o, w, k in groups_of(flat, 0, 9)
    ]


class RedisStore(ShardCalls, FeedReads):
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        pool_size: int = 16,
        feed_events: int = 10_000,
        feed_seconds: float = 3_600.0,
        cluster: bool | None = None,
        shards: int = 0,
    ) -> None:
        """cluster None asks the server (it must answer); shards 0 is the default for the mode:
        1 on a single Redis, CLUSTER_DEFAULT_SHARDS on a cluster."""
        self.prefix = prefix
        self.cluster = is_cluster(url) if cluster is None else cluster
        self.shards = ShardMap(prefix, shards or (CLUSTER_DEFAULT_SHARDS if self.cluster else 1))
        self._conn = Connection(url, cluster=self.cluster, pool_size=pool_size)
        self.client: Any = self._conn.client
        multi = self.shards.count > 1  # wake-ups and feed news by pub/sub (redis_conn.py)
        self._channel = prefix if multi else ""
        # every script that emits job events takes the feeds' retention after the channel
        self._feed = [feed_events, int(feed_seconds * 1000)]
        self._rotation = Rotation(self.shards.count)  # which shards a claim asks (claim)
        self._running: set[tuple[str, int]] = set()  # (script, shard) called apart, not yet answered
        self._wakes = Subscription(self.client, f"{prefix}:wake") if multi else None
        self._feeds = Subscription(self.client, f"{prefix}:feed") if multi else None
        # one shard on a single Redis: the calls every job makes skip the thread hop
        self._native = (
            redis_native.NativeRedis(url, pool_size=pool_size)
            if not self.cluster and not multi and redis_native.supports(url) else None
        )

    # -- keys ----------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A global key (locks, tickets, the control stream)."""
        return ":".join((self.prefix, *parts))

    def tkey(self, tenant: str, *parts: str) -> str:
        """A key of the tenant's shard, e.g. tkey(t, 'ready', t), tkey(t, 'job', id)."""
        return ":".join((self.shards.tenant_base(tenant), *parts))

    def control_key(self) -> str:
        return self.key("control")

    def feed_key(self, tenant: str) -> str:
        return self.tkey(tenant, "feed", tenant)

    async def close(self) -> None:
        if self._native is not None:
            self._native.close()
        for subscription in (self._wakes, self._feeds):
            if subscription is not None:
                subscription.close()
        await self._conn.close()

    async def ping(self) -> None:
        """Every master answers (on a cluster, one that is down or failing over does not).
        Abandoned when its caller gives up (readiness allows 2 s): redis-py retries a dead
        master with backoff for longer than that, through a whole failover."""
        if self.cluster:
            await self._run(lambda: self.client.ping(target_nodes=self.client.PRIMARIES), abandon=True)
        else:
            await self._run(self.client.ping, abandon=True)

    async def wipe(self) -> int:
        """Delete every key under the prefix, on every master: the dispatch index of any shard
        count, feeds, locks and tickets. Only for a rebuild with every node stopped."""

        def work() -> int:
            deleted = 0
            batch: list[str] = []
            for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(self.client.delete(*batch))
                    batch = []
            return deleted + (int(self.client.delete(*batch)) if batch else 0)

        return await self._run(work)

    def connections(self) -> int:
        return self._conn.connections()

    # -- the hot path --------------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[NewJob], created: Sequence[str]) -> int:
        """Dispatch new jobs and publish their creation events (PENDING, as JSON text, one per
        job); returns how many were dispatched (a job dispatched before is skipped)."""
        return (await self._enqueue(jobs, created, None))[0]

    async def enqueue_claiming(self, jobs: Sequence[NewJob], created: Sequence[str], ask: ClaimAsk) -> list[Envelope]:
        """enqueue, and in the same call claim up to ask.n ready jobs (fair across tenants, as
        claim) for ask.node: for a node whose fetcher is idle with free executors, which then
        starts them without a wake-up and a claim of its own. On a single shard; with more the
        claim is left to the fetchers (claims_on_enqueue is False) and none is returned."""
        return (await self._enqueue(jobs, created, ask))[1]

    @property
    def claims_on_enqueue(self) -> bool:
        return self.shards.count == 1

    async def _enqueue(
        self, jobs: Sequence[NewJob], created: Sequence[str], ask: ClaimAsk | None
    ) -> tuple[int, list[Envelope]]:
        groups = self._group(
            (j.tenant_id, (j.id, j.tenant_id, j.type, j.payload_json, j.max_attempts, j.timeout_ms, event,
                           j.priority, j.run_at_ms, j.delay_ms))
            for j, event in zip(jobs, created, strict=True)
        )
        if ask is None or not self.claims_on_enqueue:
            ask = ClaimAsk(0, "", 0)  # claim nothing
        head = [*self._feed, ask.n, ask.node, ask.lease_ms, ask.max_running]
        answers = await self._each_shard("enqueue", groups, head)
        return sum(int(a[0]) for a in answers), [job for a in answers for job in _claimed(a[1:])]

    async def claim(
        self, n: int, *, node: str, lease_ms: int, max_running: int = 0
    ) -> list[Envelope]:
        """Claim up to n jobs; max_running is the tenants' default running cap (0: none). The
        script publishes each claimed job's RUNNING event.

        Fair across shards as claim.lua is across the tenants of one (shards.Rotation): the
        shards that may have ready work are asked in turn, each for its tenants' share, and what
        one cannot fill goes to the next. The wake-ups that came since the last claim are read
        first, without blocking."""
        args = [n, node, lease_ms, max_running, *self._feed]
        if self._wakes is None:
            flat = await self._script("claim", self.shards.base(0), args)
            return _claimed(flat[1:])
        bases, rotation = self.shards.bases(), self._rotation

        def work() -> list[Any]:
            self._wake_shards(self._wakes.poll())  # type: ignore[union-attr]
            flat: list[Any] = []
            while (remaining := n - len(flat) // 9) > 0 and rotation.hot:
                for index in rotation.order(remaining):
                    if (remaining := n - len(flat) // 9) <= 0:
                        break
                    asked = rotation.ask(index, remaining)
                    try:
                        left, *got = self._call("claim", bases[index], [asked, *args[1:]])
                    except OUTAGES:  # its master is down: the other shards' work still runs
                        rotation.claimed(index, asked, 0, 0)
                        continue
                    flat.extend(got)
                    rotation.claimed(index, asked, len(got) // 9, int(left))
            return flat

        return _claimed(await self._run(work))

    async def wait_wake(self, block_s: int) -> bool:
        """Block until new work may be ready in some shard, or block_s passes (server-side)."""
        if self._wakes is not None:
            got = await self._run(lambda: self._wakes.wait(block_s), abandon=True)  # type: ignore[union-attr]
            self._wake_shards(got or None)  # nothing in block_s: look at every shard again
            return got is None or bool(got)
        key = f"{self.shards.base(0)}:wake"
        if self._native is not None:
            return await self._native.execute("BLPOP", key, block_s, wait_s=block_s) is not None
        return await self._run(lambda: self.client.blpop([key], timeout=block_s), abandon=True) is not None

    def _wake_shards(self, bases: set[str] | None) -> None:
        """The shards named may have ready work; None (not subscribed, a timeout) means any
        may."""
        if bases is None:
            self._rotation.wake(None)
            return
        indexes = {self.shards.index_of_base(base) for base in bases}
        self._rotation.wake({i for i in indexes if i is not None})

    async def finish(
        self, outcomes: Sequence[Applied], events: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Apply outcomes to the dispatch index, each with its events, and publish the other
        (tenant, job id, event json) events: one script call per shard concerned."""
        applied = self._group(
            (o.tenant, (o.id, o.attempt, o.action, o.delay_ms, len(o.events), *o.events)) for o in outcomes
        )
        counts: dict[int, int] = defaultdict(int)
        for o in outcomes:
            counts[self.shards.of(o.tenant)] += 1
        published = self._group((tenant, (tenant, job_id, data)) for tenant, job_id, data in events)
        groups = {
            index: [counts.get(index, 0), *applied.get(index, ()), *published.get(index, ())]
            for index in applied.keys() | published.keys()
        }
        await self._each_shard("finish", groups, self._feed)

    async def publish(self, events: Sequence[tuple[str, str, str]]) -> None:
        """Publish (tenant, job id, event json) job events to the tenants' feeds."""
        groups = self._group((tenant, (tenant, job_id, data)) for tenant, job_id, data in events)
        await self._each_shard("publish", groups, self._feed)

    async def heartbeat(
        self, leases: Sequence[tuple[str, int, str]], *, node: str, lease_ms: int, within: float = 5.0
    ) -> list[tuple[str, str]]:
        """Extend these (job id, attempt, tenant) leases; returns (job id, 'lost' | 'cancel') of
        the attempts to stop. A shard that has not answered within `within` seconds (its master
        is down) is left for the next beat; the others' leases are extended."""
        groups = self._group((tenant, (job_id, attempt)) for job_id, attempt, tenant in leases)
        answers = await self._each_shard_apart("heartbeat", groups, (node, lease_ms), within=within)
        return [(str(i), str(why)) for flat in answers if flat is not None for i, why in groups_of(flat, 0, 2)]

    async def admit(
        self, requests: Sequence[tuple[str, int, int, float, int, int, int]]
    ) -> list[tuple[str, int]]:
        """Admission of (tenant, jobs, bytes, rate, burst, max_queued, max_queued_bytes)
        submissions, in one call per shard concerned.

        Per submission, in order: ('ok' | 'queue' | 'bytes' | 'rate' | 'burst', ms to wait
        before trying again).
        """
        groups = self._group(
            (tenant, (tenant, jobs, size, repr(float(rate)), burst, max_queued, max_bytes))
            for tenant, jobs, size, rate, burst, max_queued, max_bytes in requests
        )
        answers = dict(zip(groups, await self._each_shard("admit", groups), strict=True))
        verdicts = {index: iter(groups_of(flat, 0, 2)) for index, flat in answers.items()}
        out = []
        for tenant, *_ in requests:
            verdict, ms = next(verdicts[self.shards.of(tenant)])
            out.append((str(verdict), int(ms)))
        return out

    # -- cancel, maintenance -------------------------------------------------------------------
    async def cancel(self, tenant: str, job_id: str, *, lease_ms: int) -> tuple[str, int]:
        """Stop a job in the dispatch index: ('parked', attempt) when it was waiting (it is held
        for the canceller, who drops it with `finish`), ('running', attempt) when it runs (its
        node is told on the control stream to stop it) or ('absent', 0)."""
        base = self.shards.tenant_base(tenant)

        def work() -> tuple[str, int]:
            verdict, attempt = self._call("cancel", base, [job_id, lease_ms])
            if verdict == "running":  # the heartbeat reports the flag too, should this be lost
                self.client.xadd(self.control_key(), {"k": "cancel", "id": job_id}, maxlen=10_000, approximate=True)
                if self._feeds is not None:
                    self.client.publish(f"{self.prefix}:feed", self.control_key())
            return str(verdict), int(attempt)

        return await self._run(work)

    async def upgrade(self) -> int:
        """Bring the dispatch index of an earlier version up to this one's (upgrade.lua); returns
        how many ready jobs moved."""
        return sum(int(n) for n in await self._every_shard("upgrade", []))

    async def reap(self, limit: int, *, lease_ms: int) -> list[tuple[str, Envelope]]:
        """Take back expired leases, up to `limit` in each shard."""
        return [
            (verdict, Envelope(id, tenant, type_, json.loads(payload), int(a), int(m), int(o), retries=int(k or 0)))
            for flat in await self._every_shard("reap", [limit, lease_ms])
            for verdict, id, tenant, type_, payload, a, m, o, k in groups_of(flat, 0, 9)
        ]

    async def promote(self, limit: int) -> tuple[int, int]:
        """Move due jobs to the ready queues, up to `limit` in each shard: (the most moved in one
        shard, ms until the next due job in any shard or -1)."""
        answers = [(int(m), int(d)) for m, d in await self._every_shard("promote", [limit])]
        due = [d for _, d in answers if d >= 0]
        return max(m for m, _ in answers), min(due) if due else -1

    async def reconcile(self, rows: Sequence[dict[str, Any]]) -> int:
        """Dispatch again those of these non-terminal jobs that Redis does not know."""
        groups = self._group(
            (r["tenant_id"], (
                r["id"], r["tenant_id"], r["type"], dumps(r["payload"]), r["status"],
                r["attempts"], r["max_attempts"], r["timeout_ms"], r["due_in_ms"], r.get("retries") or 0,
                r.get("priority", PRIORITY_DEFAULT),
            ))
            for r in rows
        )
        return sum(int(n) for n in await self._each_shard("reconcile", groups))

    async def missing(self, jobs: Sequence[tuple[str, str]]) -> list[str]:
        """Which of these (job id, tenant) have no envelope in Redis (one pipeline)."""

        def work() -> list[str]:
            with self.client.pipeline(transaction=False) as pipe:
                for job_id, tenant in jobs:
                    pipe.exists(self.tkey(tenant, "job", job_id))
                found = pipe.execute()
            return [job_id for (job_id, _), exists in zip(jobs, found, strict=True) if not exists]

        return await self._run(work) if jobs else []

    async def try_lock(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Take (or keep) a named lock for ttl_ms; True when `holder` has it."""
        return bool(await self._script("lock", self.key("lock", name), [holder, ttl_ms]))

    async def set_running_caps(self, caps: dict[str, int]) -> None:
        """Replace the per-tenant running caps that the claim script reads (in each shard, the
        caps of its tenants)."""
        groups = {i: [] for i in range(self.shards.count)} | self._group(
            (tenant, (tenant, cap)) for tenant, cap in caps.items()
        )
        await self._each_shard("setcaps", groups)

    # -- tickets -------------------------------------------------------------------------------
    async def put_ticket(self, digest: str, value: str, ttl_ms: int) -> None:
        await self._run(lambda: self.client.set(self.key("ticket", digest), value, px=ttl_ms))

    async def take_ticket(self, digest: str) -> str | None:
        """A ticket's value, once: it is deleted as it is read."""
        value: Any = await self._run(lambda: self.client.getdel(self.key("ticket", digest)))
        return value


async def open_redis(url: str, *, setting: str, wait: bool = True, **options: Any) -> RedisStore:
    """The store: cluster mode by the setting (auto | on | off), detected from the server under
    auto, waiting for it to answer (or, without `wait`, StoreUnavailable when it does not)."""
    if setting == "auto" and not wait:
        cluster = await trio.to_thread.run_sync(is_cluster, url, abandon_on_cancel=True)
    else:
        cluster = await trio.to_thread.run_sync(detect_cluster, url, setting, abandon_on_cancel=True)
    return RedisStore(url, cluster=cluster, **options)
