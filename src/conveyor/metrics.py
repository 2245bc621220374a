"""Counters of what a node has done, and their Prometheus text rendering.

Plain integers bumped by actors on the event loop (no locks needed); gauges are read from the
node when /metrics is asked. No I/O here.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable

Sample = tuple[str, tuple[tuple[str, str], ...], float]  # a metric: name, labels, value


# seconds, as Prometheus' client libraries bucket durations, stretched to jobs of minutes
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Observations counted in cumulative buckets (upper bounds), with their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.within = [0] * (len(bounds) + 1)  # per bucket, not cumulative: one add per value
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.within[bisect.bisect_left(self.bounds, value)] += 1

    @property
    def counts(self) -> list[int]:
        """The cumulative count of each bucket, as Prometheus has them."""
        return list(itertools.accumulate(self.within[:-1]))

    def samples(self, name: str, labels: tuple[tuple[str, str], ...]) -> list[Sample]:
        out: list[Sample] = [
            (f"{name}_bucket", (*labels, ("le", f"{bound:g}")), n) for bound, n in zip(self.bounds, self.counts, strict=True)
        ]
        return out + [
            (f"{name}_bucket", (*labels, ("le", "+Inf")), self.count),
            (f"{name}_sum", labels, self.sum),
            (f"{name}_count", labels, self.count),
        ]


class Metrics:
    def __init__(self) -> None:
        self.counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.histograms: dict[tuple[str, tuple[tuple[str, str], ...]], Histogram] = {}

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        self.counters[self.key(name, **labels)] += amount

    @staticmethod
    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        """A counter's key, for code that counts once a job: made once, then `add`ed to."""
        return (name, tuple(sorted(labels.items())))

    def add(self, key: tuple[str, tuple[tuple[str, str], ...]], amount: int = 1) -> None:
        self.counters[key] += amount

    def value(self, name: str, **labels: str) -> int:
        return self.counters[self.key(name, **labels)]

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.histogram(name, **labels).observe(value)

    def histogram(self, name: str, **labels: str) -> Histogram:
        """A histogram, made on first use: code that observes once a job keeps it."""
        key = self.key(name, **labels)
        if (histogram := self.histograms.get(key)) is None:
            histogram = self.histograms[key] = Histogram(DURATION_BUCKETS)
        return histogram

    def histogram_samples(self) -> list[Sample]:
        out: list[Sample] = []
        for (name, labels), histogram in sorted(self.histograms.items(), key=lambda item: item[0]):
            out += histogram.samples(name, labels)
        return out


HELP = {
    "conveyor_jobs_submitted_total": ("counter", "Jobs committed by this node's writer."),
    "conveyor_jobs_started_total": ("counter", "Attempts started by this node's executors."),
    "conveyor_jobs_finished_total": ("counter", "Attempts ended on this node, by outcome."),
    "conveyor_jobs_reaped_total": ("counter", "Expired leases taken back by this node's reaper, by verdict."),
    "conveyor_jobs_reconciled_total": ("counter", "Jobs dispatched again because Redis did not know them."),
    "conveyor_jobs_pruned_total": ("counter", "Finished jobs deleted by retention."),
    "conveyor_schedule_jobs_total": ("counter", "Jobs made by the fires of recurring schedules."),
    "conveyor_submissions_limited_total": ("counter", "Submissions refused with 429 by a tenant limit, by reason."),
    "conveyor_auth_failures_total": ("counter", "Requests and sockets refused for missing or bad credentials."),
    "conveyor_supervisor_restarts_total": ("counter", "Actor restarts, by supervisor."),
    "conveyor_job_run_seconds": ("histogram", "How long attempts ran on this node, by job type (handler start to end)."),
    "conveyor_job_queue_wait_seconds": (
        "histogram", "How long jobs claimed by this node waited ready, by job type (submitted or due, to claimed)."),
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


def _family(name: str) -> str:
    """The metric a sample belongs to: a histogram's _bucket, _sum and _count are one."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and HELP.get(base, ("",))[0] == "histogram":
            return base
    return name


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    pairs = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + pairs + "}" if pairs else ""


def render(samples: Iterable[tuple[str, Iterable[tuple[str, str]], float]]) -> str:
    """Prometheus text exposition of (name, labels, value) samples, grouped by name."""
    by_name: dict[str, list[str]] = {}
    for name, labels, value in samples:
        shown = str(int(value)) if float(value).is_integer() else f"{value:g}"
        by_name.setdefault(_family(name), []).append(f"{name}{_labels(labels)} {shown}")
    lines = []
    for name, rows in by_name.items():
        kind, help_text = HELP.get(name, ("untyped", name))
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *rows]
    return "\n".join(lines) + "\n"
