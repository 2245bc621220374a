"""Managing tenants and their API keys: the one implementation behind the admin HTTP API and
the `conveyor tenants` / `conveyor keys` commands.

Input is checked here (ids, names, limit overrides) before PostgreSQL sees it; a missing tenant
or key raises NotFound, an existing tenant Conflict. The functions work on PostgreSQL alone (the
CLI uses them); `Tenants` is a node's service around them, which also applies a change on its
node at once: new limits, and a revoked key forgotten with its sockets closed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from . import keys, limits
from .auth import Authenticator
from .config import Config
from .failures import StoreUnavailable
from .handlers import FieldError
from .hub import Hub
from .stores import PostgresStore, RedisStore
from .validation import Invalid
from .wire import iso

log = logging.getLogger(__name__)

REVOKED_CLOSE = (4401, "API key revoked")

MAX_KEY_NAME = 100


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


def tenant_json(row: Mapping[str, Any], config: Config) -> dict[str, Any]:
    overrides = {
        wire: row[column]
        for wire, (column, _, _) in limits.FIELDS.items()
        if row.get(column) is not None
    }
    body = {
        "id": row["id"],
        "limits": limits.resolve(config, row).as_json(),
        "overrides": overrides,
        "createdAt": iso(row["created_at"]),
    }
    if "active_keys" in row:
        body["activeKeys"] = row["active_keys"]
    return body


def key_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "tenantId": row["tenant_id"],
        "name": row["name"],
        "createdAt": iso(row["created_at"]),
        "revokedAt": iso(row["revoked_at"]),
    }


def _check_tenant_id(tenant: Any) -> str:
    if not keys.valid_tenant_id(tenant):
        raise Invalid(
            "Validation failed",
            [FieldError("id", "must be 1-100 characters of letters, digits, '_', '.', '-', "
                              "starting with a letter or digit")],
        )
    return str(tenant)


def _overrides(body: Mapping[str, Any]) -> dict[str, Any]:
    values, errors = limits.parse_overrides(body)
    unknown = set(body) - set(limits.FIELDS) - {"id"}
    errors += [FieldError(name, "is not a known limit") for name in sorted(unknown)]
    if errors:
        raise Invalid("Validation failed", errors)
    return values


async def create_tenant(pg: PostgresStore, body: Mapping[str, Any], config: Config) -> dict[str, Any]:
    tenant = _check_tenant_id(body.get("id"))
    row = await pg.create_tenant(tenant, _overrides(body))
    if row is None:
        raise Conflict(f"tenant {tenant} already exists")
    return tenant_json(row, config)


async def update_limits(
    pg: PostgresStore, tenant: str, body: Mapping[str, Any], config: Config
) -> dict[str, Any]:
    row = await pg.update_tenant_limits(tenant, _overrides(body))
    if row is None:
        raise NotFound(f"tenant {tenant} not found")
    return tenant_json(row, config)


async def list_tenants(pg: PostgresStore, config: Config) -> list[dict[str, Any]]:
    return [tenant_json(row, config) for row in await pg.list_tenants()]


async def create_key(pg: PostgresStore, tenant: str, name: Any = "") -> dict[str, Any]:
    """A new key for the tenant; the answer is the only place the key itself ever appears."""
    if not isinstance(name, str) or len(name) > MAX_KEY_NAME:
        raise Invalid("Validation failed", [FieldError("name", f"must be a string of at most {MAX_KEY_NAME} characters")])
    key_id, key, digest = keys.new_key()
    row = await pg.create_key(tenant, key_id=key_id, name=name, digest=digest)
    if row is None:
        raise NotFound(f"tenant {tenant} not found")
    return {**key_json(row), "key": key}


async def list_keys(pg: PostgresStore, tenant: str) -> list[dict[str, Any]]:
    rows = await pg.list_keys(tenant)
    if not rows and not any(t["id"] == tenant for t in await pg.list_tenants()):
        raise NotFound(f"tenant {tenant} not found")
    return [key_json(row) for row in rows]


async def revoke_key(pg: PostgresStore, tenant: str, key_id: str) -> dict[str, Any]:
    row = await pg.revoke_key(tenant, key_id)
    if row is None:
        raise NotFound(f"tenant {tenant} has no key {key_id}")
    return key_json(row)


@attrs.define
class Tenants:
    """A node's tenant operations (the admin API's): the functions above, with each change
    applied on this node at once, and `refresh`, which the tenancy actor calls."""

    config: Config
    pg: PostgresStore
    redis: RedisStore
    view: limits.TenantLimitsView
    auth: Authenticator
    hub: Hub

    async def refresh(self) -> None:
        """Read the limit overrides and which trusted keys were revoked, and apply both."""
        caps = self.view.replace(await self.pg.tenant_overrides())
        revoked = await self.pg.revoked_keys(sorted(set(self.auth.cached_ids()) | self.hub.key_ids()))
        if revoked:
            self.auth.forget(revoked)
            closed = self.hub.close_keys(revoked, *REVOKED_CLOSE)
            log.info("revoked keys %s: closed %d sockets", ", ".join(sorted(revoked)), closed)
        await self.redis.set_running_caps(caps)

    async def _apply_now(self) -> None:
        """Apply changed limits on this node now rather than at the next tenancy round."""
        try:
            await self.refresh()
        except StoreUnavailable:
            pass  # stored in PostgreSQL; the tenancy actor applies it once Redis answers

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        created = await create_tenant(self.pg, body, self.config)
        await self._apply_now()
        return created

    async def all(self) -> list[dict[str, Any]]:
        return await list_tenants(self.pg, self.config)

    async def update_limits(self, tenant: str, body: Mapping[str, Any]) -> dict[str, Any]:
        updated = await update_limits(self.pg, tenant, body, self.config)
        await self._apply_now()
        return updated

    async def create_key(self, tenant: str, name: Any = "") -> dict[str, Any]:
        return await create_key(self.pg, tenant, name)

    async def keys(self, tenant: str) -> list[dict[str, Any]]:
        return await list_keys(self.pg, tenant)

    async def revoke_key(self, tenant: str, key_id: str) -> dict[str, Any]:
        revoked = await revoke_key(self.pg, tenant, key_id)
        self.auth.forget({key_id})
        self.hub.close_keys({key_id}, *REVOKED_CLOSE)
        return revoked
