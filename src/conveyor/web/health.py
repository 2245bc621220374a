"""Liveness (/health), readiness (/health/ready: the stores answer, the tree is whole, the node
is not draining) and Prometheus metrics (/metrics)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from ..metrics import render
from ..wire import iso
from .context import NodeView


def register(app: QuartTrio, node: NodeView) -> None:
    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "timestamp": iso(datetime.now(UTC))}

    @app.get("/metrics")
    async def metrics() -> Any:
        return Response(
            render(node.samples()), mimetype="text/plain", content_type="text/plain; version=0.0.4"
        )

    @app.get("/health/ready")
    async def ready() -> Any:
        ok, checks = await node.readiness()
        body = {
            "status": "ready" if ok else "unavailable",
            "timestamp": iso(datetime.now(UTC)),
            "checks": checks,
            **node.status(),
        }
        return body, 200 if ok else 503
