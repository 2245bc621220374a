"""The admin HTTP API under /admin: tenants, their limits and their API keys.

Guarded by the admin key from configuration (CONVEYOR_ADMIN_KEY), sent as a bearer token;
without one configured the whole API answers 404. The work is done by conveyor.tenants, which
the CLI uses too. A key revoked here stops working on this node at once (cache and sockets) and
on the others within CONVEYOR_AUTH_REFRESH_SECONDS.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from .. import keys, tenants
from ..actors.tenancy import REVOKED_CLOSE, refresh
from ..auth import Unauthorized
from ..handlers import FieldError
from ..node import Node
from ..stores import StoreUnavailable
from ..validation import Invalid


def register(app: QuartTrio, node: Node, json_body: Callable[[], Awaitable[Any]]) -> None:
    config = node.config

    @app.before_request
    async def guard() -> Response | None:
        if not request.path.startswith("/admin/") and request.path != "/admin":
            return None
        if request.method == "OPTIONS":
            return None
        if not config.admin_key:
            body = {"error": "the admin API is disabled: set CONVEYOR_ADMIN_KEY to enable it"}
            return Response(json.dumps(body), status=404, mimetype="application/json")
        token = keys.bearer(request.headers.get("Authorization")) or ""
        if not hmac.compare_digest(token.encode(), config.admin_key.encode()):
            raise Unauthorized("the admin API needs 'Authorization: Bearer <admin key>'")
        return None

    async def body() -> dict[str, Any]:
        value = await json_body() if (await request.get_data()).strip() else {}
        if not isinstance(value, dict):
            raise Invalid("Validation failed", [FieldError("body", "must be a JSON object")])
        return value

    @app.post("/admin/tenants")
    async def create_tenant() -> Any:
        created = await tenants.create_tenant(node.pg, await body(), config)
        await _apply_now(node)
        return created, 201

    @app.get("/admin/tenants")
    async def list_tenants() -> Any:
        return {"tenants": await tenants.list_tenants(node.pg, config)}

    @app.patch("/admin/tenants/<tenant>")
    async def update_tenant(tenant: str) -> Any:
        updated = await tenants.update_limits(node.pg, tenant, await body(), config)
        await _apply_now(node)
        return updated

    @app.post("/admin/tenants/<tenant>/keys")
    async def create_key(tenant: str) -> Any:
        return await tenants.create_key(node.pg, tenant, (await body()).get("name", "")), 201

    @app.get("/admin/tenants/<tenant>/keys")
    async def list_keys(tenant: str) -> Any:
        return {"keys": await tenants.list_keys(node.pg, tenant)}

    @app.post("/admin/tenants/<tenant>/keys/<key_id>/revoke")
    async def revoke_key(tenant: str, key_id: str) -> Any:
        revoked = await tenants.revoke_key(node.pg, tenant, key_id)
        node.auth.forget({key_id})
        node.hub.close_keys({key_id}, *REVOKED_CLOSE)
        return revoked



async def _apply_now(node: Node) -> None:
    """Apply changed limits on this node now rather than at the next tenancy round."""
    try:
        await refresh(node.pg, node.redis, node.limits, node.auth, node.hub)
    except StoreUnavailable:
        pass  # stored in PostgreSQL; the tenancy actor applies it once Redis answers
