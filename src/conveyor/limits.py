"""Per-tenant limits: the node's defaults, overridden per tenant. Pure, no I/O.

In a tenant's row a NULL limit means "the configured default" and 0 means "no limit"
(for the rate; the burst is always at least 1).
"""

from __future__ import annotations

from collections.abc import Mapping
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
}
MAX_VALUE = 2**31 - 1


@attrs.frozen
class TenantLimits:
    max_running: int
    submit_rate: float
    submit_burst: int
    max_queued: int
    max_websockets: int

    def as_json(self) -> dict[str, Any]:
        return {wire: getattr(self, column) for wire, (column, _, _) in FIELDS.items()}


class Limited(Exception):
    """A submission refused by a tenant's limits (429): why, and when to try again."""

    def __init__(self, message: str, *, retry_after_ms: int | None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


def refusal(verdict: str, tenant: str, jobs: int, limits: TenantLimits, wait_ms: int) -> Limited:
    """The 429 for an admission verdict of the admit script."""
    if verdict == "queue":
        message = f"tenant {tenant} has too many unfinished jobs (limit {limits.max_queued})"
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
            and (kind is float or float(value).is_integer())
            and low <= value <= MAX_VALUE
        )
        if not ok:
            what = "a number" if kind is float else "an integer"
            errors.append(FieldError(wire, f"must be {what} from {low} to {MAX_VALUE}, or null"))
        else:
            values[column] = None if value is None else kind(value)
    return values, errors
