"""The tenancy actor: keeps this node's view of tenants current.

Every few seconds, two small queries: the tenants' limit overrides (kept in memory for the HTTP
layer and the writer, and the running caps written to Redis for the claim script), and which of
the keys this node trusts (cached or on open sockets) were revoked: those are forgotten and their
sockets closed. A revocation made through this node's admin API takes effect at once; one made
elsewhere (another node, the CLI) within this interval.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .. import limits
from ..auth import Authenticator
from ..config import Config
from ..stores import PostgresStore, RedisStore, StoreUnavailable
from .broadcaster import Hub

log = logging.getLogger(__name__)

REVOKED_CLOSE = (4401, "API key revoked")


class TenantLimitsView:
    """Effective limits per tenant: the overrides read from PostgreSQL over the defaults."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.defaults = limits.defaults(config)
        self._overrides: dict[str, limits.TenantLimits] = {}

    def of(self, tenant: str) -> limits.TenantLimits:
        return self._overrides.get(tenant, self.defaults)

    def replace(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Take a fresh set of override rows; returns the running caps that are overridden."""
        self._overrides = {row["id"]: limits.resolve(self.config, row) for row in rows}
        return {row["id"]: row["max_running"] for row in rows if row["max_running"] is not None}


async def refresh(
    pg: PostgresStore, redis: RedisStore, view: TenantLimitsView, auth: Authenticator, hub: Hub
) -> None:
    caps = view.replace(await pg.tenant_overrides())
    revoked = await pg.revoked_keys(sorted(set(auth.cached_ids()) | hub.key_ids()))
    if revoked:
        auth.forget(revoked)
        closed = hub.close_keys(revoked, *REVOKED_CLOSE)
        log.info("revoked keys %s: closed %d sockets", ", ".join(sorted(revoked)), closed)
    await redis.set_running_caps(caps)


async def run_tenancy(
    pg: PostgresStore,
    redis: RedisStore,
    view: TenantLimitsView,
    auth: Authenticator,
    hub: Hub,
    *,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    started = False
    while True:
        try:
            await refresh(pg, redis, view, auth, hub)
        except StoreUnavailable as exc:
            log.warning("tenancy: %s (keeping the limits read before)", exc)
        if not started:
            task_status.started()
            started = True
        await trio.sleep(interval)
