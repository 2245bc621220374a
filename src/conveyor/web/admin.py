"""The admin HTTP API under /admin: tenants, their limits and their API keys.

Guarded by the admin key from configuration (CONVEYOR_ADMIN_KEY), sent as a bearer token;
without one configured the whole API answers 404. The work is done by conveyor.tenants, which
the CLI uses too. A key revoked here stops working on this node at once (cache and sockets) and
on the others within CONVEYOR_AUTH_REFRESH_SECONDS.
"""

from __future__ import annotations

import hmac
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from .. import keys
from ..auth import Unauthorized
from .bodies import authorization_of
from .context import Services
from .errors import error
from .requests import Requests


def register(app: QuartTrio, svc: Services, req: Requests) -> None:
    config, tenants = svc.config, svc.tenants

    @app.before_request
    async def guard() -> Response | None:
        if not request.path.startswith("/admin/") and request.path != "/admin":
            return None
        if request.method == "OPTIONS":
            return None
        if not config.admin_key:
            return error(404, "the admin API is disabled: set CONVEYOR_ADMIN_KEY to enable it")
        token = keys.bearer(authorization_of(request.scope)) or ""
        if not hmac.compare_digest(token.encode(), config.admin_key.encode()):
            raise Unauthorized("the admin API needs 'Authorization: Bearer <admin key>'")
        return None

    @app.post("/admin/tenants")
    async def create_tenant() -> Any:
        return await tenants.create(await req.object_body()), 201

    @app.get("/admin/tenants")
    async def list_tenants() -> Any:
        return {"tenants": await tenants.all()}

    @app.patch("/admin/tenants/<tenant>")
    async def update_tenant(tenant: str) -> Any:
        return await tenants.update_limits(tenant, await req.object_body())

    @app.post("/admin/tenants/<tenant>/keys")
    async def create_key(tenant: str) -> Any:
        return await tenants.create_key(tenant, (await req.object_body()).get("name", "")), 201

    @app.get("/admin/tenants/<tenant>/keys")
    async def list_keys(tenant: str) -> Any:
        return {"keys": await tenants.keys(tenant)}

    @app.post("/admin/tenants/<tenant>/keys/<key_id>/revoke")
    async def revoke_key(tenant: str, key_id: str) -> Any:
        return await tenants.revoke_key(tenant, key_id)
