"""The dashboard: static files at / and /dashboard/*, and the small reads it needs besides the
job API — job types, a tenant's queue depth now and over the last hour, and a job's events
still in its tenant's feed.

The page is plain HTML, CSS and JavaScript (static/), with no build step. It signs in with an API
key kept in the browser's sessionStorage, reads jobs through the REST API, and follows the
tenant's feed over a WebSocket (a ticket from POST /ws/tickets), resuming with its last eventId.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from ..validation import parse_tenant_query
from .context import Services
from .errors import error
from .requests import Requests

STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
}
# The page runs only its own files, talks only to its own node, and is not framed by others.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def register(app: QuartTrio, svc: Services, req: Requests) -> None:
    jobs = svc.jobs
    index = _static("index.html")
    assets = {name: (_static(name), kind) for name, kind in STATIC.items()}

    @app.get("/")
    async def dashboard() -> Response:
        return Response(index, mimetype="text/html", headers=PAGE_HEADERS)

    @app.get("/dashboard/<name>")
    async def asset(name: str) -> Any:
        if name not in assets:
            return error(404, "Not found")
        body, kind = assets[name]
        return Response(body, content_type=kind, headers={"Cache-Control": "no-cache", **PAGE_HEADERS})

    @app.get("/job-types")
    async def job_types() -> Any:
        await req.caller()
        return {"types": svc.registry.names()}

    @app.get("/stats")
    async def stats() -> Any:
        """Queue depth now, for the dashboard's chart: unfinished jobs, and how many run."""
        async with req.reading() as who:
            tenant = parse_tenant_query(request.args, who.tenant)
            unfinished, running = await jobs.depth(tenant)
        return {"tenantId": tenant, "unfinished": unfinished, "running": running,
                "waiting": max(0, unfinished - running)}

    @app.get("/stats/history")
    async def stats_history() -> Any:
        """The tenant's last hour in 5 s slots, for the charts to open with."""
        async with req.reading() as who:
            tenant = parse_tenant_query(request.args, who.tenant)
            return {"tenantId": tenant, **await jobs.history(tenant)}

    @app.get("/jobs/<job_id>/events")
    async def job_events(job_id: str) -> Any:
        async with req.reading() as who:
            found_id, events = await jobs.events(job_id, who.tenant)
        return {"jobId": found_id, "events": events}
