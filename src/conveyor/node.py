"""The node: builds the supervision tree, owns the channels between actors, and drains.

`run_node` is the whole of `conveyor serve` minus signal handling: it applies migrations,
opens the stores, starts the tree, reports the node once it serves, and on the drain event stops
claiming, lets running jobs finish within the grace period, hands the rest back and returns.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import attrs
import psycopg
import trio

from .actors.broadcaster import run_broadcaster
from .actors.executor import InlineJobs, run_executor
from .actors.fetcher import run_fetcher
from .actors.handoff import LocalClaims
from .actors.heartbeat import run_heartbeat
from .actors.maintenance import run_reaper, run_reconciler, run_scheduler
from .actors.pool import CancelReason, ExecutorPool
from .actors.recorder import run_recorder
from .actors.retention import run_pruner
from .actors.schedules import Nudge, planner, run_schedule_fires
from .actors.tenancy import run_tenancy
from .actors.writer import WRITERS, Submit, run_writer, submit_through
from .auth import Authenticator
from .config import Config, check
from .failures import Busy, StoreUnavailable
from .handlers import Registry, build_registry
from .hub import Hub
from .jobs import Jobs
from .limits import TenantLimitsView
from .metrics import Metrics, Sample
from .model import Envelope, Flush, NewJob, Record
from .process import default_node_id, process_samples, tune_collector
from .progress import Flusher
from .scheduling import Schedules
from .status import ExecutorStatistics, NodeStatistics, WebSocketStatistics
from .stores import PostgresStore, RedisStore
from .stores.postgres import IdempotencyKey
from .stores.redis import open_redis
from .stores.schedule_rows import ScheduleRows
from .stores.sqlfiles import migrate_sync
from .supervision import ChildSpec, Restart, Strategy, Supervisor
from .tenants import Tenants
from .web.app import body_budget, create_app
from .web.bodies import ASGIApp, ByteBudget
from .web.context import Services
from .web.server import CannotListen, serve_http

__all__ = ["Busy", "CannotListen", "Node", "run_node"]

log = logging.getLogger(__name__)

@attrs.define
class Node:
    config: Config
    node_id: str
    pg: PostgresStore
    redis: RedisStore
    registry: Registry
    pool: ExecutorPool
    hub: Hub
    draining: trio.Event
    submissions: trio.MemorySendChannel[Submit]
    records: trio.MemorySendChannel[Record]
    auth: Authenticator
    limits: TenantLimitsView
    tenants: Tenants
    jobs: Jobs = attrs.field(init=False)
    schedules: Schedules = attrs.field(init=False)
    nudge: Nudge = attrs.Factory(Nudge)  # wakes this node's schedule fires when it writes one
    tree: Supervisor | None = None
    body_budget: ByteBudget | None = None  # the web layer's, for the gauges
    urls: list[str] = attrs.Factory(list)
    metrics: Metrics = attrs.Factory(Metrics)

    def __attrs_post_init__(self) -> None:
        self.jobs = Jobs(self.config, self.pg, self.redis, self.submit)
        self.schedules = Schedules(ScheduleRows(self.pg), self.limits.of, self.nudge)

    async def submit(self, jobs: list[NewJob], idempotency: IdempotencyKey | None = None) -> None:
        """Have the writer commit and dispatch jobs (actors/writer.py), unless the node drains."""
        if self.draining.is_set():
            raise Busy("node is shutting down")
        await submit_through(self.submissions, jobs, idempotency)

    def control(self, kind: str, fields: dict[str, str]) -> None:
        """A control entry from the control stream: cancel a job if it runs here."""
        if kind == "cancel" and "id" in fields:
            self.pool.cancel_job(fields["id"], CancelReason.CANCEL)

    def statistics(self) -> NodeStatistics:
        pool = self.pool
        return NodeStatistics(
            node=self.node_id,
            draining=self.draining.is_set(),
            executors=ExecutorStatistics(pool.size, pool.busy(), pool.running_count(), len(pool.leases)),
            websockets=WebSocketStatistics(self.hub.connections, self.hub.subscriptions()),
            supervisor=self.tree.statistics() if self.tree else None,
        )

    def status(self) -> dict[str, Any]:
        return self.statistics().as_json()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: both stores answer within 2 s, the tree is whole and the node does not drain."""
        checks: dict[str, Any] = {}
        for name, ping in (("postgres", self.pg.ping), ("redis", self.redis.ping)):
            try:
                with trio.fail_after(2):
                    await ping()
                checks[name] = {"ok": True}
            except (StoreUnavailable, trio.TooSlowError) as exc:
                checks[name] = {"ok": False, "error": str(exc) or "timed out"}
        tree_ok = self.tree is not None and self.tree.healthy()
        return all(c["ok"] for c in checks.values()) and tree_ok and not self.draining.is_set(), checks

    def samples(self) -> list[Sample]:
        """Every metric of this node as (name, labels, value), counters and gauges."""
        out: list[Sample] = [
            (name, labels, value) for (name, labels), value in sorted(self.metrics.counters.items())
        ]
        out += self.metrics.histogram_samples()
        now = self.statistics()
        if now.supervisor is not None:
            out += [
                ("conveyor_supervisor_restarts_total", (("supervisor", name),), restarts)
                for name, restarts in now.supervisor.all_restarts()
            ]
        out += [
            ("conveyor_executors", (), now.executors.size),
            ("conveyor_executors_busy", (), now.executors.busy),
            ("conveyor_leases_held", (), now.executors.leases),
            ("conveyor_websocket_connections", (), now.websockets.connections),
            ("conveyor_websocket_subscriptions", (), now.websockets.subscriptions),
            ("conveyor_writer_queue", (), self.submissions.statistics().current_buffer_used),
            ("conveyor_recorder_queue", (), self.records.statistics().current_buffer_used),
            ("conveyor_pg_connections", (), self.pg.connections()),
            ("conveyor_redis_connections", (), self.redis.connections()),
            *process_samples(),
        ]
        if self.body_budget is not None:
            budget = self.body_budget.statistics()
            out += [
                ("conveyor_body_budget_bytes", (), budget.total),
                ("conveyor_body_budget_used_bytes", (), budget.used),
                ("conveyor_body_budget_waiting", (), budget.waiting),
            ]
        return out


async def run_node(
    config: Config,
    *,
    draining: trio.Event | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    check(config)
    if not config.auth:
        log.warning(
            "auth is OFF (CONVEYOR_AUTH=off): anyone who can reach %s can act as any tenant; "
            "for local development only", config.host,
        )
    draining = draining if draining is not None else trio.Event()
    registry = build_registry(config)  # a bad handler module is a configuration error
    try:
        await trio.to_thread.run_sync(migrate_sync, config.database_url)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot apply migrations: {exc}".strip()) from exc
    pg = PostgresStore(config.database_url, pool_size=config.pg_pool_size)
    redis = await open_redis(
        config.redis_url, setting=config.redis_cluster, shards=config.redis_shards, prefix=config.redis_prefix,
        pool_size=config.redis_pool_size, feed_events=config.feed_retention_events,
        feed_seconds=config.feed_retention_seconds,
    )
    try:
        await pg.open()
        await _serve(config, draining, pg, redis, registry, task_status)
    finally:
        with trio.CancelScope(shield=True):
            await pg.close()
            await redis.close()


@attrs.frozen
class _Channels:
    """The channels between actors, owned by the node for its life: actors get clones, so a
    restarted actor finds its channels intact."""

    submit_send: trio.MemorySendChannel[Submit]
    submit_recv: trio.MemoryReceiveChannel[Submit]
    jobs_send: trio.MemorySendChannel[Envelope]
    jobs_recv: trio.MemoryReceiveChannel[Envelope]
    records_send: trio.MemorySendChannel[Record]
    records_recv: trio.MemoryReceiveChannel[Record]

    @classmethod
    def open(cls, config: Config) -> _Channels:
        return cls(
            *trio.open_memory_channel[Submit](config.writer_queue),
            *trio.open_memory_channel[Envelope](config.concurrency),
            # executors fill the recorder's next batch while it writes one (4 ×: 5,200 jobs/s)
            *trio.open_memory_channel[Record](config.concurrency * 16),
        )


def _node(
    config: Config, draining: trio.Event, pg: PostgresStore, redis: RedisStore, registry: Registry,
    channels: _Channels,
) -> Node:
    auth = Authenticator(pg, enabled=config.auth)
    limits = TenantLimitsView(config)
    hub = Hub()
    return Node(
        config=config,
        node_id=config.node_id or default_node_id(),
        pg=pg,
        redis=redis,
        registry=registry,
        pool=ExecutorPool(config.concurrency),
        hub=hub,
        draining=draining,
        submissions=channels.submit_send,
        records=channels.records_send,
        auth=auth,
        limits=limits,
        tenants=Tenants(config, pg, redis, limits, auth, hub),
    )


def _pipeline(node: Node, ch: _Channels) -> Supervisor:
    """Claim, run and record jobs, and carry their events to this node's WebSockets."""
    config, pg, redis = node.config, node.pg, node.redis
    lease_ms = int(config.lease_seconds * 1000)

    async def executors(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            flusher = Flusher(ch.records_send.clone(), config.progress_interval_ms / 1000)
            await nursery.start(flusher.run)
            for _ in range(config.concurrency):
                await nursery.start(
                    run_executor, ch.jobs_recv.clone(), ch.records_send.clone(), node.pool,
                    node.registry, config, node.metrics, flusher,
                )
            task_status.started()

    # Actors that use channels are started through a lambda, so that each incarnation gets
    # fresh clones of the node's channel ends; the others through functools.partial.
    return Supervisor(
        "pipeline",
        [
            ChildSpec("broadcaster", functools.partial(run_broadcaster, redis, node.hub, node.control)),
            ChildSpec("recorder", lambda **kw: run_recorder(pg, redis, ch.records_recv.clone(), node.pool, **kw)),
            ChildSpec("executors", executors),
            ChildSpec(
                "fetcher",
                lambda **kw: run_fetcher(
                    redis, node.pool, ch.jobs_send.clone(), node.draining, node_id=node.node_id,
                    lease_ms=lease_ms, batch=config.concurrency, max_running=config.tenant_max_running,
                    inline=InlineJobs(ch.records_send.clone(), node.pool, node.registry, config, node.metrics), **kw,
                ),
                restart=Restart.TRANSIENT,  # it returns normally once the node drains
            ),
            ChildSpec(
                "heartbeat",
                functools.partial(run_heartbeat, redis, node.pool, node_id=node.node_id, lease_ms=lease_ms),
            ),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=5,
        period=10.0,
    )


def _maintenance(node: Node, ch: _Channels) -> Supervisor:
    """Timers and repairs: due jobs, expired leases, tenants' limits and keys, rows PostgreSQL
    has that the dispatch index lost, and retention."""
    config, pg, redis = node.config, node.pg, node.redis
    return Supervisor(
        "maintenance",
        [
            ChildSpec("scheduler", functools.partial(run_scheduler, redis)),
            ChildSpec(
                "reaper",
                lambda **kw: run_reaper(
                    redis, ch.records_send.clone(), node.metrics, lease_ms=int(config.lease_seconds * 1000),
                    interval=min(1.0, config.lease_seconds / 10), **kw,
                ),
            ),
            ChildSpec("tenancy", functools.partial(run_tenancy, node.tenants.refresh, interval=config.auth_refresh_seconds)),
            ChildSpec("reconciler", functools.partial(
                run_reconciler, pg, redis, node.metrics, node_id=node.node_id, interval=config.reconcile_seconds)),
            ChildSpec("schedules", functools.partial(
                run_schedule_fires, node.schedules.rows, redis, planner(node.registry, config), node.metrics, node.nudge)),
            ChildSpec(
                "pruner",
                functools.partial(
                    run_pruner, pg, redis, node.metrics, node_id=node.node_id,
                    retention_s=config.retention_seconds, retentions=node.limits.retentions,
                    idempotency_s=config.idempotency_seconds,
                ),
            ),
        ],
        strategy=Strategy.ONE_FOR_ONE,
        intensity=10,
        period=10.0,
    )


def _web(node: Node) -> ASGIApp:
    """The HTTP application, given the services and a view of this node (never the node's
    stores)."""
    config = node.config
    node.body_budget = body_budget(config.body_budget_bytes, config.max_body_bytes, config.auth)
    services = Services(
        config=config, registry=node.registry, jobs=node.jobs, schedules=node.schedules,
        tenants=node.tenants, auth=node.auth,
        limits=node.limits, hub=node.hub, metrics=node.metrics, node=node,
    )
    return create_app(services, node.body_budget)


async def _serve(
    config: Config,
    draining: trio.Event,
    pg: PostgresStore,
    redis: RedisStore,
    registry: Registry,
    task_status: trio.TaskStatus[Node],
) -> None:
    ch = _Channels.open(config)
    node = _node(config, draining, pg, redis, registry, ch)
    http_done = trio.Event()

    async def http(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        app = _web(node)
        try:
            async with trio.open_nursery() as nursery:
                node.urls = await nursery.start(serve_http, app, config, draining)
                task_status.started()
        finally:
            http_done.set()

    node.tree = Supervisor(
        "node",
        [
            *[ChildSpec(f"writer-{i + 1}", lambda **kw: run_writer(
                pg, redis, ch.submit_recv.clone(), node.metrics, node.limits.of,
                retain_s=config.idempotency_seconds,
                local=LocalClaims(node.pool, ch.jobs_send, draining, node.node_id, config), **kw,
            )) for i in range(WRITERS)],
            ChildSpec("pipeline", _pipeline(node, ch)),
            ChildSpec("maintenance", _maintenance(node, ch)),
            # last, so the node only listens once everything behind the API is running;
            # transient, since it returns normally when the node drains
            ChildSpec("http", http, restart=Restart.TRANSIENT),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        intensity=3,
        period=30.0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.tree.run)
        log.info("node %s serving on %s", node.node_id, ", ".join(node.urls))
        tune_collector()  # start-up is done
        task_status.started(node)
        await draining.wait()
        await drain(node, http_done)
        nursery.cancel_scope.cancel()
    log.info("node %s stopped", node.node_id)


async def drain(node: Node, http_done: trio.Event) -> None:
    """Stop claiming, let running jobs finish within the grace period, hand back the rest."""
    pool = node.pool
    log.info("draining: %d jobs running, grace %.1fs", pool.busy(), node.config.drain_grace_seconds)
    with trio.move_on_after(node.config.drain_grace_seconds):
        await pool.wait_idle()
    pool.handing_back = True
    if cancelled := pool.cancel_all(CancelReason.DRAIN):
        log.info("draining: handing %d unfinished jobs back", cancelled)
    with trio.move_on_after(10):
        await pool.wait_idle()
    flushed = trio.Event()
    with trio.move_on_after(10):
        await node.records.send(Flush(flushed))
        await flushed.wait()
    if not flushed.is_set():
        log.error("draining: the recorder did not flush in time; leases will expire and be reaped")
    with trio.move_on_after(10):
        await http_done.wait()
