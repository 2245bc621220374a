"""The node: builds the supervision tree, owns the channels between actors, and drains.

`run_node` is the whole of `conveyor serve` minus signal handling: it applies migrations,
opens the stores, starts the tree, reports the node once it serves, and on the drain event stops
claiming, lets running jobs finish within the grace period, hands the rest back and returns.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
from typing import Any, cast

import attrs
import psycopg
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .actors.broadcaster import Hub, run_broadcaster
from .actors.executor import run_executor
from .actors.fetcher import run_fetcher
from .actors.heartbeat import run_heartbeat
from .actors.maintenance import run_reaper, run_reconciler, run_scheduler
from .actors.pool import CancelReason, ExecutorPool
from .actors.recorder import run_recorder
from .actors.tenancy import TenantLimitsView, run_tenancy
from .actors.writer import AlreadySubmitted, Submit, run_writer
from .auth import Authenticator
from .config import Config, check
from .handlers import Registry, build_registry
from .limits import Limited
from .metrics import Metrics
from .model import Envelope, Flush, NewJob
from .progress import Flusher
from .stores import PostgresStore, RedisStore, StoreUnavailable
from .stores.postgres import IdempotencyKey, migrate_sync
from .supervision import ChildSpec, Restart, Strategy, Supervisor
from .validation import Invalid

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT_S = 30.0


class CannotListen(Exception):
    """The HTTP address cannot be bound (in use, or not this machine's)."""


class Busy(Exception):
    """The node cannot take more work right now (503)."""


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
    records: trio.MemorySendChannel[Any]
    auth: Authenticator
    limits: TenantLimitsView
    tree: Supervisor | None = None
    body_budget: Any = None  # the web layer's ByteBudget, for the gauges
    urls: list[str] = attrs.Factory(list)
    metrics: Metrics = attrs.Factory(Metrics)

    async def submit(self, jobs: list[NewJob], idempotency: IdempotencyKey | None = None) -> None:
        """Have the writer commit and dispatch jobs; returns once their rows are committed.

        Raises AlreadySubmitted when the idempotency key was taken by an earlier request."""
        if self.draining.is_set():
            raise Busy("node is shutting down")
        reply_send, reply_recv = trio.open_memory_channel[BaseException | None](1)
        try:
            self.submissions.send_nowait(Submit(tuple(jobs), reply_send, idempotency))
        except trio.WouldBlock:
            raise Busy("too many submissions waiting to be written") from None
        async with reply_recv:
            with trio.fail_after(SUBMIT_TIMEOUT_S):
                failure = await reply_recv.receive()
        if isinstance(failure, StoreUnavailable | Limited | AlreadySubmitted | Invalid):
            raise failure  # the writer's answer, as it gave it
        if failure is not None:
            raise RuntimeError(f"submission failed: {failure!r}")

    def control(self, kind: str, fields: dict[str, str]) -> None:
        """A control entry from the control stream: cancel a job if it runs here."""
        if kind == "cancel" and "id" in fields:
            self.pool.cancel_job(fields["id"], CancelReason.CANCEL)

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "draining": self.draining.is_set(),
            "executors": {
                "size": self.pool.size,
                "busy": self.pool.busy(),
                "running": self.pool.running_count(),
                "leases": len(self.pool.leases),
            },
            "websockets": {"connections": self.hub.connections, "subscriptions": self.hub.subscriptions()},
            "supervisor": self.tree.status() if self.tree else None,
        }

    def samples(self) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        """Every metric of this node as (name, labels, value), counters and gauges."""
        out: list[tuple[str, tuple[tuple[str, str], ...], float]] = [
            (name, labels, value) for (name, labels), value in sorted(self.metrics.counters.items())
        ]

        def restarts(tree: dict[str, Any]) -> None:
            out.append(("conveyor_supervisor_restarts_total", (("supervisor", tree["name"]),), tree["restarts"]))
            for child in tree["children"]:
                if "supervisor" in child:
                    restarts(child["supervisor"])

        if self.tree is not None:
            restarts(self.tree.status())
        out += [
            ("conveyor_executors", (), self.pool.size),
            ("conveyor_executors_busy", (), self.pool.busy()),
            ("conveyor_leases_held", (), len(self.pool.leases)),
            ("conveyor_websocket_connections", (), self.hub.connections),
            ("conveyor_websocket_subscriptions", (), self.hub.subscriptions()),
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


def process_samples() -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Resident memory, open descriptors and live trio tasks: what a leak would show in."""
    out: list[tuple[str, tuple[tuple[str, str], ...], float]] = []
    try:
        with open("/proc/self/statm") as statm:
            rss_pages = int(statm.read().split()[1])
        out.append(("process_resident_memory_bytes", (), rss_pages * os.sysconf("SC_PAGE_SIZE")))
        out.append(("process_open_fds", (), len(os.listdir("/proc/self/fd"))))
    except OSError:
        pass  # not Linux: no /proc

    def tasks(task: trio.lowlevel.Task) -> int:
        return 1 + sum(tasks(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    if root is not None:
        out.append(("conveyor_trio_tasks", (), tasks(root)))
    return out


MMAP_THRESHOLD = 256 * 1024


def tune_allocator() -> None:
    """Have glibc's malloc map every block of MMAP_THRESHOLD bytes or more on its own, and give it
    back to the system when freed. By default the threshold grows with the blocks freed (up to
    32 MiB), and the memory of a burst of large request bodies stayed with the process (issue 11
    saw 2 GB resident after 250 concurrent 1 MiB submissions). Not glibc: nothing to do."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold = -3
    if not mallopt(m_mmap_threshold, MMAP_THRESHOLD):
        log.warning("could not set malloc's mmap threshold; memory after large requests may stay high")


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"]
    hc.graceful_timeout = 5.0
    hc.websocket_max_message_size = 64 * 1024
    # a request waiting for the body budget holds at most this many chunks of its body (64 KiB
    # each) in hypercorn; the rest stays in the kernel, pushing back on the client
    hc.max_app_queue_size = 2
    # connections the kernel queues until the node accepts them (hypercorn's default, 100,
    # overflowed under 250 clients at once: the kernel then drops handshakes, and clients see
    # retransmission delays or, on a loaded machine, a connection closed without an answer)
    hc.backlog = 2048
    hc.accesslog = None
    hc.include_server_header = False
    return hc


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
    redis = RedisStore(
        config.redis_url, prefix=config.redis_prefix, pool_size=config.redis_pool_size,
        feed_events=config.feed_retention_events, feed_seconds=config.feed_retention_seconds,
    )
    try:
        await pg.open()
        await _serve(config, draining, pg, redis, registry, task_status)
    finally:
        with trio.CancelScope(shield=True):
            await pg.close()
            await redis.close()


async def _serve(
    config: Config,
    draining: trio.Event,
    pg: PostgresStore,
    redis: RedisStore,
    registry: Registry,
    task_status: trio.TaskStatus[Node],
) -> None:
    from .web.app import create_app  # the web layer imports Node from here

    # Channels are owned here, for the life of the node: actors get clones, so a restarted
    # actor finds its channels intact.
    submit_send, submit_recv = trio.open_memory_channel[Submit](config.writer_queue)
    jobs_send, jobs_recv = trio.open_memory_channel[Envelope](config.concurrency)
    records_send, records_recv = trio.open_memory_channel[Any](config.concurrency * 4)
    node = Node(
        config=config,
        node_id=config.node_id or default_node_id(),
        pg=pg,
        redis=redis,
        registry=registry,
        pool=ExecutorPool(config.concurrency),
        hub=Hub(),
        draining=draining,
        submissions=submit_send,
        records=records_send,
        auth=Authenticator(pg, enabled=config.auth),
        limits=TenantLimitsView(config),
    )
    lease_ms = int(config.lease_seconds * 1000)
    http_done = trio.Event()

    async def http(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        app = create_app(node)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    node.urls = await nursery.start(
                        functools.partial(
                            hypercorn_serve, cast(Any, app), hypercorn_config(config),
                            shutdown_trigger=draining.wait,
                        )
                    )
                except* OSError as group:  # before it serves: the address is taken or not ours
                    exc: BaseException = group
                    while isinstance(exc, BaseExceptionGroup):
                        exc = exc.exceptions[0]
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    raise CannotListen(f"cannot listen on {config.host}:{config.port}: {why}") from None
                task_status.started()
        finally:
            http_done.set()

    async def executors(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            flusher = Flusher(records_send.clone(), config.progress_interval_ms / 1000)
            await nursery.start(flusher.run)
            for _ in range(config.concurrency):
                await nursery.start(
                    run_executor, jobs_recv.clone(), records_send.clone(), node.pool,
                    node.registry, config, node.metrics, flusher,
                )
            task_status.started()

    # Actors that use channels are started through a lambda, so that each incarnation gets
    # fresh clones of the node's channel ends; the others through functools.partial.
    pipeline = Supervisor(
        "pipeline",
        [
            ChildSpec(
                "broadcaster", functools.partial(run_broadcaster, redis, node.hub, node.control)
            ),
            ChildSpec("recorder", lambda **kw: run_recorder(pg, redis, records_recv.clone(), node.pool, **kw)),
            ChildSpec("executors", executors),
            ChildSpec(
                "fetcher",
                lambda **kw: run_fetcher(
                    redis, node.pool, jobs_send.clone(), draining, node_id=node.node_id,
                    lease_ms=lease_ms, batch=config.concurrency,
                    max_running=config.tenant_max_running, **kw,
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
    maintenance = Supervisor(
        "maintenance",
        [
            ChildSpec("scheduler", functools.partial(run_scheduler, redis)),
            ChildSpec(
                "reaper",
                lambda **kw: run_reaper(
                    redis, records_send.clone(), node.metrics, lease_ms=lease_ms,
                    interval=min(1.0, config.lease_seconds / 10), **kw,
                ),
            ),
            ChildSpec(
                "tenancy",
                functools.partial(
                    run_tenancy, pg, redis, node.limits, node.auth, node.hub,
                    interval=config.auth_refresh_seconds,
                ),
            ),
            ChildSpec(
                "reconciler",
                functools.partial(
                    run_reconciler, pg, redis, node.metrics, node_id=node.node_id,
                    interval=config.reconcile_seconds,
                ),
            ),
        ],
        strategy=Strategy.ONE_FOR_ONE,
        intensity=10,
        period=10.0,
    )
    node.tree = Supervisor(
        "node",
        [
            ChildSpec(
                "writer",
                lambda **kw: run_writer(
                    pg, redis, submit_recv.clone(), node.metrics, node.limits.of,
                    retain_s=config.idempotency_seconds, **kw,
                ),
            ),
            ChildSpec("pipeline", pipeline),
            ChildSpec("maintenance", maintenance),
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
