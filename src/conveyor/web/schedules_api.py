"""The schedule routes: create or replace, list, get, delete, pause and resume a tenant's
recurring schedules. Each parses with validation.py, calls the schedules service and renders
with wire.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quart import request
from quart_trio import QuartTrio

from .. import validation
from ..wire import schedule_json
from .context import Services
from .requests import Requests


def register(app: QuartTrio, svc: Services, req: Requests) -> None:
    registry, schedules = svc.registry, svc.schedules

    @app.put("/schedules/<name>")
    async def put_schedule(name: str) -> Any:
        who = await req.caller()
        new = validation.parse_schedule(name, await req.json_body(), registry, datetime.now(UTC), who.tenant)
        row, created = await schedules.put(new)
        return schedule_json(row), 201 if created else 200

    @app.get("/schedules")
    async def list_schedules() -> Any:
        async with req.reading() as who:
            tenant = validation.parse_tenant_query(request.args, who.tenant)
            rows = await schedules.list(tenant)
        return {"schedules": [schedule_json(row) for row in rows]}

    @app.get("/schedules/<name>")
    async def get_schedule(name: str) -> Any:
        async with req.reading() as who:
            tenant = validation.parse_tenant_query(request.args, who.tenant)
            return schedule_json(await schedules.get(tenant, name))

    @app.delete("/schedules/<name>")
    async def delete_schedule(name: str) -> Any:
        who = await req.caller()
        await schedules.delete(validation.parse_tenant_query(request.args, who.tenant), name)
        return "", 204

    @app.post("/schedules/<name>/pause")
    async def pause_schedule(name: str) -> Any:
        who = await req.caller()
        return schedule_json(await schedules.pause(validation.parse_tenant_query(request.args, who.tenant), name))

    @app.post("/schedules/<name>/resume")
    async def resume_schedule(name: str) -> Any:
        who = await req.caller()
        return schedule_json(await schedules.resume(validation.parse_tenant_query(request.args, who.tenant), name))
