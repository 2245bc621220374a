"""The node's HTTP application: the quart app, its routes registered per resource, behind the
request-body gate; the hottest routes are answered in front of quart (fastpath.py).

Routes parse with the pure rules in validation.py, call the services (jobs.py, scheduling.py,
tenants.py) and render with wire.py; no route touches a store or the node (web/context.py says
what they get). The routes: jobs_api (jobs and tickets), schedules_api (recurring schedules), ws
(the live feed), admin, dashboard, health, and /openapi.json (openapi.py).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from .. import validation
from . import admin, dashboard, errors, health, jobs_api, openapi, schedules_api, ws, wsdirect
from .access import AccessLog
from .bodies import ASGIApp, BodyGate, ByteBudget
from .context import Services
from .fastpath import FastRoutes
from .requests import Requests

CORS_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"


def create_app(svc: Services, budget: ByteBudget) -> ASGIApp:
    """The node's ASGI application: the quart app behind the request-body gate."""
    config = svc.config
    app = QuartTrio("conveyor")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the wire order (id first)

    @app.before_request
    async def check_request() -> None:
        """Query and path parameters must be storable text; a body is read here, so that one
        over the limit is a 413 on every route and none is left unread on the connection."""
        validation.storable_params(request.args.items(multi=True), "query")
        validation.storable_params(((k, str(v)) for k, v in (request.view_args or {}).items()), "path")
        if request.content_length or request.headers.get("Transfer-Encoding"):
            await request.get_data()

    @app.after_request
    async def cors(response: Response) -> Response:
        response.headers["Access-Control-Allow-Origin"] = "*"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            asked = request.headers.get("Access-Control-Request-Headers")
            if asked:
                response.headers["Access-Control-Allow-Headers"] = asked
                response.headers["Vary"] = "Access-Control-Request-Headers"
            response.status_code = 204
            response.set_data(b"")
        return response

    req = Requests(svc)
    errors.register(app, svc.metrics, config.max_body_bytes)
    jobs_api.register(app, svc, req)
    schedules_api.register(app, svc, req)
    health.register(app, svc.node)
    ws.register(app, svc)
    admin.register(app, svc, req)
    dashboard.register(app, svc, req)
    described = openapi.document(svc.registry, _version())

    @app.get("/openapi.json")
    async def openapi_json() -> Any:
        return described
    gated = BodyGate(FastRoutes(app, svc, req), budget, svc.auth, svc.metrics, config.max_body_bytes)
    return wsdirect.KeepSend(AccessLog(gated) if config.access_log else gated)


def _version() -> str:
    try:
        return metadata.version("conveyor")
    except metadata.PackageNotFoundError:
        return "0"


def body_budget(config_total: int, max_body: int, auth: bool) -> ByteBudget:
    """The node's budget for request bodies in flight: a quarter of it per tenant with auth."""
    return ByteBudget(config_total, max(config_total // 4, max_body) if auth else config_total)
