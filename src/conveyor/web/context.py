"""What the web layer is given to serve: the services, and a small view of the node.

The web layer never sees the node or a store: job operations are the jobs service's, tenant
operations the tenants service's, and the node shows it only whether it drains, its status and
its metrics (NodeView, which conveyor.node's Node implements).
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio

from ..auth import Authenticator
from ..config import Config
from ..handlers import Registry
from ..hub import Hub
from ..jobs import Jobs
from ..limits import TenantLimitsView
from ..metrics import Metrics, Sample
from ..scheduling import Schedules
from ..tenants import Tenants


class NodeView(Protocol):
    """The node as the web layer sees it."""

    @property
    def draining(self) -> trio.Event: ...

    def status(self) -> dict[str, Any]: ...

    def samples(self) -> list[Sample]: ...

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the node is ready for traffic, and what each check found."""
        ...


@attrs.frozen
class Services:
    config: Config
    registry: Registry
    jobs: Jobs
    schedules: Schedules
    tenants: Tenants
    auth: Authenticator
    limits: TenantLimitsView
    hub: Hub
    metrics: Metrics
    node: NodeView
