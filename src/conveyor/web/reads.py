"""A tenant's reads on this node: within its read rate (429 beyond it), and at most
READS_AT_ONCE of them in progress, so that one tenant's readers queue behind each other and
never in front of another tenant's reads (which share half of the PostgreSQL pool).

A read counts one, except a list page, which counts one per ROWS_PER_READ jobs it may return:
the rate is in units of work, and a page of 100 jobs is five of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from ..limits import Limited, ReadLimiter, TenantLimits
from ..metrics import Metrics

READS_AT_ONCE = 2
ROWS_PER_READ = 20


def list_cost(limit: int) -> int:
    return max(1, -(-limit // ROWS_PER_READ))


@attrs.define
class _Slots:
    semaphore: trio.Semaphore = attrs.Factory(lambda: trio.Semaphore(READS_AT_ONCE))
    users: int = 0


class TenantReads:
    def __init__(self, limits_of: Callable[[str], TenantLimits], metrics: Metrics) -> None:
        self.limits_of = limits_of
        self.metrics = metrics
        self.rate = ReadLimiter(limits_of)
        self._slots: dict[str, _Slots] = {}  # only tenants with reads in progress or waiting

    @asynccontextmanager
    async def read(self, tenant: str, cost: int = 1) -> AsyncIterator[None]:
        """Within: a read of the tenant that counts `cost`, in one of its slots."""
        if (wait := self.rate.take(tenant, trio.current_time(), cost)) > 0:
            self.metrics.inc("conveyor_reads_limited_total")
            raise Limited(
                f"tenant {tenant} exceeded its read rate of {self.limits_of(tenant).read_rate:g} "
                "requests/s on this node",
                retry_after_ms=int(wait * 1000) + 1,
            )
        slots = self._slots.setdefault(tenant, _Slots())
        slots.users += 1
        try:
            async with slots.semaphore:
                yield
        finally:
            slots.users -= 1
            if not slots.users:
                del self._slots[tenant]
