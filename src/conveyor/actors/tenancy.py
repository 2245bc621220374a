"""The tenancy actor: keeps this node's view of tenants current.

Every few seconds it calls the tenants service's `refresh`: two small queries, the tenants'
limit overrides (kept in memory for the HTTP layer and the writer, and the running caps written
to Redis for the claim script), and which of the keys this node trusts (cached or on open
sockets) were revoked: those are forgotten and their sockets closed. A revocation made through
this node's admin API takes effect at once; one made elsewhere (another node, the CLI) within
this interval.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from ..failures import StoreUnavailable

log = logging.getLogger(__name__)


async def run_tenancy(
    refresh: Callable[[], Awaitable[None]],
    *,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    started = False
    while True:
        try:
            await refresh()
        except StoreUnavailable as exc:
            log.warning("tenancy: %s (keeping the limits read before)", exc)
        if not started:
            task_status.started()
            started = True
        await trio.sleep(interval)
