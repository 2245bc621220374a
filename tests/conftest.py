"""Test rules for conveyor (read before adding a test).

- Real services: PostgreSQL and Redis on loopback, the machine's or embedded ones started for
  the session (tests/services.py, CONVEYOR_TEST_SERVICES). Each session migrates a template database;
  each test gets a fresh copy of it (so the jobs a test counts, and those a node's reconciler
  finds, are its own) and a fresh Redis key prefix; both are dropped afterwards.
- Nodes listen on loopback, port 0. Processes a test starts are killed by the PID it started.
- Every test that does I/O runs under a trio.fail_after deadline; waiting is done on events or
  on a condition polled under that deadline, never on a bare sleep that hopes.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis as redis_lib
import trio

from conveyor.config import Config
from conveyor.node import Node, run_node
from conveyor.shards import CLUSTER_DEFAULT_SHARDS, ShardMap
from conveyor.stores import PostgresStore, RedisStore
from conveyor.stores.redis_conn import is_cluster
from conveyor.stores.sqlfiles import migrate_sync
from tests import services

SERVICES = services.choose()  # the machine's PostgreSQL and Redis, or embedded ones (tests/services.py)
ADMIN_URL = SERVICES.admin_url
REDIS_URL = SERVICES.redis_url  # the nodes' Redis (a node of a cluster under CONVEYOR_TEST_REDIS=cluster)
PLAIN_REDIS_URL = SERVICES.plain_redis_url  # a plain Redis, for what tests keep beside the queue
SHARDS = SERVICES.shards


def redis_client(url: str = REDIS_URL, **options: Any) -> Any:
    """A redis-py client for the server `url` names: redis-py's cluster client for a cluster."""
    if is_cluster(url):
        return redis_lib.RedisCluster.from_url(url, **options)
    return redis_lib.Redis.from_url(url, **options)


def shard_map(config: Config) -> ShardMap:
    """The shards of the dispatch index of nodes with this config."""
    count = config.redis_shards or (CLUSTER_DEFAULT_SHARDS if is_cluster(config.redis_url) else 1)
    return ShardMap(config.redis_prefix, count)


def feed_key(config: Config, tenant: str) -> str:
    """The key of a tenant's feed in the dispatch index of nodes with this config."""
    return f"{shard_map(config).tenant_base(tenant)}:feed:{tenant}"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under a prefix (of every master, on a cluster)."""
    client = redis_client(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def _db_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A migrated database made once per session, that each test's database is copied from."""
    name = f"conveyor_test_{secrets.token_hex(6)}_template"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate_sync(_db_url(name))
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    """A fresh, migrated database for this test: the ledger a test counts is its own."""
    name = f"conveyor_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield _db_url(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"ctest-{secrets.token_hex(6)}"
    yield prefix
    delete_prefix(REDIS_URL, prefix)
    if PLAIN_REDIS_URL != REDIS_URL:
        delete_prefix(PLAIN_REDIS_URL, prefix)


@pytest.fixture
async def stores(database_url: str, redis_prefix: str) -> AsyncIterator[tuple[PostgresStore, RedisStore]]:
    """This test's stores, for tests that drive actors and scripts without a node."""
    pg = PostgresStore(database_url, pool_size=2)
    await pg.open()
    redis = RedisStore(REDIS_URL, prefix=redis_prefix, pool_size=4, shards=SHARDS)
    yield pg, redis
    await pg.close()
    await redis.close()


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_config(database_url: str, redis_prefix: str) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "redis_prefix": redis_prefix,
            "redis_shards": SHARDS,
            "host": "127.0.0.1",
            "port": 0,
            "concurrency": 8,
            "lease_seconds": 5.0,
            "backoff_base_ms": 50,
            "backoff_cap_ms": 1000,
            "drain_grace_seconds": 2.0,
            # the reference's open protocol, loopback targets and no submit rate limit, unless
            # a test (tests/integration/test_tenancy.py and friends) turns them on
            "auth": False,
            "webhook_allow_private": True,
            "tenant_submit_rate": 0.0,
            "tenant_read_rate": 0.0,
        }
        values.update(overrides)
        return Config(**values)

    return make


@pytest.fixture
def start_node(nursery: trio.Nursery, make_config: Callable[..., Config]) -> Callable[..., Any]:
    """Start a node in this test's nursery; returns (node, base_url)."""

    async def start(**overrides: Any) -> Node:
        return await nursery.start(run_node, make_config(**overrides))

    return start


@pytest.fixture
async def node(start_node: Callable[..., Any]) -> AsyncIterator[Node]:
    yield await start_node()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis() -> Iterator[Any]:
    """A redis-server of this test's own, on a free loopback port, killed by its PID afterwards."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (it runs the shared Redis too)"

    class PrivateRedis:
        def __init__(self) -> None:
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            client = redis_lib.Redis(port=self.port)
            while True:
                try:
                    client.ping()
                    break
                except redis_lib.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            client.close()

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait(10)
                self.proc = None

    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
