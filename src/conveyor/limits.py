"""Per-tenant limits: the node's defaults, overridden per tenant. Pure, no I/O.

In a tenant's row a NULL limit means "the configured default" and 0 means "no limit"
(for the rate; the burst is always at least 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .config import Config
from .handlers import FieldError

FIELDS = {
    # wire name -> (row column, type, lowest value)
    "maxRunning": ("max_running", int, 0),
    "submitRate": ("submit_rate", float, 0),
    "submitBurst": ("submit_burst", int, 1),
    "maxQueued": ("max_queued", int, 0),
    "maxWebsockets": ("max_websockets", int, 0),
    "maxQueuedBytes": ("max_queued_bytes", int, 0),
    "readRate": ("read_rate", float, 0),
    "readBurst": ("read_burst", int, 1),
    "retentionSeconds": ("retention_seconds", int, 0),
    "maxSchedules": ("max_schedules", int, 0),
}
MAX_VALUE = 2**31 - 1


@attrs.frozen
class TenantLimits:
    max_running: int
    submit_rate: float
    submit_burst: int
    max_queued: int
    max_websockets: int
    max_queued_bytes: int
    read_rate: float
    read_burst: int
    retention_seconds: int  # finished jobs are deleted this long after they finished (0: kept)
    max_schedules: int

    def as_json(self) -> dict[str, Any]:
        return {wire: getattr(self, column) for wire, (column, _, _) in FIELDS.items()}


class Limited(Exception):
    """A submission refused by a tenant's limits (429): why, and when to try again."""

    def __init__(self, message: str, *, retry_after_ms: int | None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


def refusal(
    verdict: str, tenant: str, jobs: int, limits: TenantLimits, wait_ms: int, size: int = 0
) -> Limited:
    """The 429 for an admission verdict of the admit script."""
    if verdict == "queue":
        message = f"tenant {tenant} has too many unfinished jobs (limit {limits.max_queued})"
    elif verdict == "bytes":
        message = (
            f"tenant {tenant}'s unfinished jobs hold too many bytes of payload "
            f"(limit {limits.max_queued_bytes})"
        )
        if size > limits.max_queued_bytes:  # it can never fit: waiting will not help
            return Limited(f"{message}; this submission alone has {size}", retry_after_ms=None)
    elif verdict == "burst":
        message = (
            f"a submission of {jobs} jobs exceeds tenant {tenant}'s burst of "
            f"{limits.submit_burst} jobs; split it"
        )
        return Limited(message, retry_after_ms=None)
    else:
        message = f"tenant {tenant} exceeded its submit rate of {limits.submit_rate:g} jobs/s"
    return Limited(message, retry_after_ms=max(wait_ms, 1))


def defaults(config: Config) -> TenantLimits:
    return TenantLimits(
        max_running=config.tenant_max_running,
        submit_rate=config.tenant_submit_rate,
        submit_burst=config.tenant_submit_burst,
        max_queued=config.tenant_max_queued,
        max_websockets=config.tenant_max_websockets,
        max_queued_bytes=config.tenant_max_queued_bytes,
        read_rate=config.tenant_read_rate,
        read_burst=config.tenant_read_burst,
        retention_seconds=config.retention_seconds,
        max_schedules=config.tenant_max_schedules,
    )


def resolve(config: Config, row: Mapping[str, Any] | None) -> TenantLimits:
    """A tenant's effective limits: its row's overrides over the configured defaults."""
    base = defaults(config)
    if not row:
        return base
    return attrs.evolve(
        base, **{c: row[c] for c, _, _ in FIELDS.values() if row.get(c) is not None}
    )


def parse_overrides(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """Limit overrides from an admin request: wire name -> number, or null for the default."""
    values: dict[str, Any] = {}
    errors = []
    for wire, (column, kind, low) in FIELDS.items():
        if wire not in body:
            continue
        value = body[wire]
        ok = value is None or (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and low <= value <= MAX_VALUE  # first: an int too large for a float is out of range
            and (kind is float or isinstance(value, int) or value.is_integer())
        )
        if not ok:
            what = "a number" if kind is float else "an integer"
            errors.append(FieldError(wire, f"must be {what} from {low} to {MAX_VALUE}, or null"))
        else:
            values[column] = None if value is None else kind(value)
    return values, errors


class TenantLimitsView:
    """Effective limits per tenant: the overrides read from PostgreSQL over the defaults."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.defaults = defaults(config)
        self._overrides: dict[str, TenantLimits] = {}

    def of(self, tenant: str) -> TenantLimits:
        return self._overrides.get(tenant, self.defaults)

    def retentions(self) -> dict[str, int]:
        """The tenants whose retention is their own, and it (seconds, 0: kept forever)."""
        default = self.defaults.retention_seconds
        return {t: lim.retention_seconds for t, lim in self._overrides.items() if lim.retention_seconds != default}

    def replace(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Take a fresh set of override rows; returns the running caps that are overridden."""
        self._overrides = {row["id"]: resolve(self.config, row) for row in rows}
        return {row["id"]: row["max_running"] for row in rows if row["max_running"] is not None}


@attrs.define
class _Bucket:
    tokens: float
    at: float


class ReadLimiter:
    """Per-tenant token buckets for reads, kept in this node's memory (a read is answered by
    one node, and what it protects is that node). `now` is passed in: no clock here."""

    MAX_TENANTS = 10_000

    def __init__(self, limits_of: Callable[[str], TenantLimits]) -> None:
        self.limits_of = limits_of
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant: str, now: float, cost: int = 1) -> float:
        """Take `cost` reads for the tenant: 0.0 when allowed, else the seconds until they would
        be (a cost above the burst is charged as the whole burst)."""
        lim = self.limits_of(tenant)
        if lim.read_rate <= 0:
            return 0.0
        bucket = self._buckets.get(tenant)
        if bucket is None:
            if len(self._buckets) >= self.MAX_TENANTS:
                self._forget_full(now)
            bucket = self._buckets[tenant] = _Bucket(float(lim.read_burst), now)
        bucket.tokens = min(lim.read_burst, bucket.tokens + (now - bucket.at) * lim.read_rate)
        bucket.at = now
        cost = min(cost, lim.read_burst)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / lim.read_rate

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        for tenant, bucket in list(self._buckets.items()):
            lim = self.limits_of(tenant)
            if lim.read_rate <= 0 or bucket.tokens + (now - bucket.at) * lim.read_rate >= lim.read_burst:
                del self._buckets[tenant]
