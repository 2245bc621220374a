"""Helpers shared by the integration and acceptance tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from conveyor import tenants
from conveyor.actors.tenancy import refresh
from conveyor.node import Node


def base_url(node: Node) -> str:
    return node.urls[0]


async def wait_until(predicate: Callable[[], Any], *, interval: float = 0.02) -> Any:
    """Poll an async or sync predicate until it returns something truthy.

    Callers bound it with trio.fail_after (every I/O test has a deadline).
    """
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        await trio.sleep(interval)


ADMIN_KEY = "test-admin-key-0123456789abcdef"


async def new_tenant(node: Node, tenant: str, **limits: Any) -> str:
    """Create a tenant (with limit overrides, wire names) and one API key; returns the key."""
    await tenants.create_tenant(node.pg, {"id": tenant, **limits}, node.config)
    created = await tenants.create_key(node.pg, tenant, "test")
    await refresh(node.pg, node.redis, node.limits, node.auth, node.hub)
    return str(created["key"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
