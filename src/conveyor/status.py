"""A node's state now, as attrs results (the way trio's statistics() are): what its readiness
route shows (as_json) and its metrics count."""

from __future__ import annotations

from typing import Any

import attrs

from .supervision import SupervisorStatistics


@attrs.frozen
class ExecutorStatistics:
    size: int
    busy: int  # slots taken (claimed or running)
    running: int
    leases: int


@attrs.frozen
class WebSocketStatistics:
    connections: int
    subscriptions: int


@attrs.frozen
class NodeStatistics:
    """A node now, as its readiness route shows it (as_json) and its metrics count it."""

    node: str
    draining: bool
    executors: ExecutorStatistics
    websockets: WebSocketStatistics
    supervisor: SupervisorStatistics | None

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "draining": self.draining,
            "executors": attrs.asdict(self.executors),
            "websockets": attrs.asdict(self.websockets),
            "supervisor": self.supervisor.as_json() if self.supervisor else None,
        }
