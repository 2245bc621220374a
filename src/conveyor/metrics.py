"""Counters of what a node has done, and their Prometheus text rendering.

Plain integers bumped by actors on the event loop (no locks needed); gauges are read from the
node when /metrics is asked. No I/O here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

Sample = tuple[str, tuple[tuple[str, str], ...], float]  # a metric: name, labels, value


class Metrics:
    def __init__(self) -> None:
        self.counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += amount

    def value(self, name: str, **labels: str) -> int:
        return self.counters[(name, tuple(sorted(labels.items())))]


HELP = {
    "conveyor_jobs_submitted_total": ("counter", "Jobs committed by this node's writer."),
    "conveyor_jobs_started_total": ("counter", "Attempts started by this node's executors."),
    "conveyor_jobs_finished_total": ("counter", "Attempts ended on this node, by outcome."),
    "conveyor_jobs_reaped_total": ("counter", "Expired leases taken back by this node's reaper, by verdict."),
    "conveyor_jobs_reconciled_total": ("counter", "Jobs dispatched again because Redis did not know them."),
    "conveyor_submissions_limited_total": ("counter", "Submissions refused with 429 by a tenant limit, by reason."),
    "conveyor_auth_failures_total": ("counter", "Requests and sockets refused for missing or bad credentials."),
    "conveyor_supervisor_restarts_total": ("counter", "Actor restarts, by supervisor."),
    "conveyor_executors": ("gauge", "Size of the executor pool."),
    "conveyor_executors_busy": ("gauge", "Executor slots in use."),
    "conveyor_leases_held": ("gauge", "Job leases this node holds and heartbeats."),
    "conveyor_websocket_connections": ("gauge", "Open WebSocket connections."),
    "conveyor_websocket_subscriptions": ("gauge", "Tenant subscriptions over all connections."),
    "conveyor_writer_queue": ("gauge", "Submissions waiting for group commit."),
    "conveyor_recorder_queue": ("gauge", "State transitions waiting to be written."),
    "conveyor_pg_connections": ("gauge", "PostgreSQL connections the node's pool holds open."),
    "conveyor_redis_connections": ("gauge", "Redis connections the node's pool holds open."),
    "process_resident_memory_bytes": ("gauge", "Resident memory of the node process."),
    "process_open_fds": ("gauge", "Open file descriptors of the node process."),
    "conveyor_trio_tasks": ("gauge", "Live trio tasks in the node process."),
}


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    pairs = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + pairs + "}" if pairs else ""


def render(samples: Iterable[tuple[str, Iterable[tuple[str, str]], float]]) -> str:
    """Prometheus text exposition of (name, labels, value) samples, grouped by name."""
    by_name: dict[str, list[str]] = {}
    for name, labels, value in samples:
        shown = str(int(value)) if float(value).is_integer() else f"{value:g}"
        by_name.setdefault(name, []).append(f"{name}{_labels(labels)} {shown}")
    lines = []
    for name, rows in by_name.items():
        kind, help_text = HELP.get(name, ("untyped", name))
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *rows]
    return "\n".join(lines) + "\n"
