"""The fault suite: real `conveyor serve` processes, real PostgreSQL and Redis, real faults.

Every scenario submits jobs through HTTP and ends by checking the ledger: every accepted job is in
a terminal state (none lost), and executions beyond one per job (duplicates) are counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis as redis_lib
import trio

from conveyor.config import Config
from tests.acceptance.nodes import NodeProcess
from tests.conftest import PLAIN_REDIS_URL, feed_key, redis_client
from tests.helpers import wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """Nodes started by a test (killed by their PIDs at the end), and the ledger they share."""

    def __init__(self, config: Config, tmp_path: Path) -> None:
        self.config = config
        self.tmp_path = tmp_path
        self.nodes: list[NodeProcess] = []

    async def start(self, name: str, port: int = 0, **env: Any) -> NodeProcess:
        settings = {
            "PYTHONPATH": str(ROOT),
            "LEDGER_REDIS_URL": PLAIN_REDIS_URL,
            "CONVEYOR_HANDLER_MODULES": "tests.faults.ledger",
            "CONVEYOR_NODE_ID": name,
            "CONVEYOR_LEASE_SECONDS": "3",
            "CONVEYOR_RECONCILE_SECONDS": "1",
            **env,
        }
        node = NodeProcess(self.config, self.tmp_path / f"{name}.log", port, **settings)
        self.nodes.append(node)
        with trio.fail_after(30):
            await node.start()
        return node

    def redis(self) -> redis_lib.Redis:
        """The Redis that holds the ledger: a plain one, also under CONVEYOR_TEST_REDIS=cluster."""
        return redis_lib.Redis.from_url(PLAIN_REDIS_URL, decode_responses=True)

    def queue_redis(self) -> Any:
        """The nodes' Redis (a cluster client on a cluster), for looking at the dispatch index."""
        return redis_client(self.config.redis_url, decode_responses=True)

    def feed_key(self, tenant: str) -> str:
        return feed_key(self.config, tenant)

    def _ledger(self, name: str) -> list[tuple[str, ...]]:
        client = self.redis()
        try:
            rows = client.lrange(f"{self.config.redis_prefix}:ledger:{name}", 0, -1)
        finally:
            client.close()
        return [tuple(row.split(" ")) for row in rows]

    def starts(self) -> list[tuple[str, str]]:
        """(job id, node) per execution started."""
        return [(job, node) for job, node, *_ in self._ledger("starts")]

    def start_times(self) -> list[tuple[str, float]]:
        """(job id, unix time) per execution started."""
        return [(job, float(at)) for job, _node, at in self._ledger("starts")]

    def feed_events(self, tenant: str) -> list[dict[str, Any]]:
        """Every event in the tenant's feed, oldest first."""
        import json

        client = redis_client(self.config.redis_url, decode_responses=True)
        try:
            entries = client.xrange(feed_key(self.config, tenant))
        finally:
            client.close()
        return [json.loads(fields["d"]) for _, fields in entries]

    def ends(self) -> list[tuple[str, str, str]]:
        """(job id, node, completed | cancelled) per execution ended."""
        return self._ledger("ends")  # type: ignore[return-value]

    def statuses(self, tenant: str) -> dict[str, str]:
        with psycopg.connect(self.config.database_url) as conn:
            rows = conn.execute("SELECT id::text, status FROM jobs WHERE tenant_id = %s", (tenant,))
            return dict(rows.fetchall())

    async def wait_terminal(self, tenant: str, expected: int) -> dict[str, str]:
        """Wait (callers hold a deadline) until `expected` jobs of the tenant are all terminal."""

        async def terminal() -> dict[str, str] | None:
            statuses = await trio.to_thread.run_sync(self.statuses, tenant)
            done = len(statuses) == expected and all(
                s in ("COMPLETED", "FAILED", "CANCELLED") for s in statuses.values()
            )
            return statuses if done else None

        return await wait_until(terminal, interval=0.2)

    def duplicates(self) -> int:
        """Executions beyond one per job."""
        return sum(n - 1 for n in Counter(job for job, _ in self.starts()).values())


@pytest.fixture
async def make_cluster(
    make_config: Callable[..., Config], tmp_path: Path
) -> AsyncIterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(**overrides: Any) -> Cluster:
        made.append(Cluster(make_config(**overrides), tmp_path))
        return made[-1]

    yield make
    with trio.move_on_after(20, shield=True):
        for c in made:
            for node in c.nodes:
                await node.kill()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()


async def submit_ledger(url: str, tenant: str, n: int, ms: int, **extra: Any) -> list[str]:
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for start in range(0, n, 1000):
            job = {"tenantId": tenant, "type": "ledger", "payload": {"ms": ms}, **extra}
            r = await client.post("/jobs/batch", json={"jobs": [job] * min(1000, n - start)})
            assert r.status_code == 201, r.text
            ids += r.json()["jobIds"]
    return ids
