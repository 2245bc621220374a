"""The PostgreSQL and Redis the suite runs against, chosen once per session (tests/conftest.py).

CONVEYOR_TEST_SERVICES says which:
- `machine`: the servers that CONVEYOR_TEST_ADMIN_URL (or DATABASE_URL's server) and REDIS_URL
  name, by default PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379;
- `embedded`: `conveyor services` on a temporary data directory, started once for the session
  and stopped (with its data) when the session ends; it dies with the session however that ends;
- unset: the machine's when they answer, otherwise embedded ones.

CONVEYOR_TEST_REDIS=cluster puts the dispatch index on a real Valkey Cluster instead (3 masters, 3
replicas, tests/redis_cluster.py), started once for the session; the plain Redis above still holds
what tests keep beside the queue (the fault suite's ledger). CONVEYOR_TEST_REDIS_SHARDS sets the
nodes' CONVEYOR_REDIS_SHARDS (default 0, the mode's default).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs


@attrs.frozen
class Services:
    admin_url: str  # a PostgreSQL URL of the `postgres` database, for CREATE DATABASE
    redis_url: str  # the nodes' Redis: a plain one, or a node of the session's cluster
    embedded: bool
    plain_redis_url: str = ""  # a plain Redis (the same as redis_url without a cluster)
    cluster: bool = False
    shards: int = 0


def _postgres_db(url: str) -> str:
    """The same server's `postgres` database, as a URL."""
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def _admin_url() -> str:
    if url := os.environ.get("CONVEYOR_TEST_ADMIN_URL"):
        return url
    if url := os.environ.get("DATABASE_URL"):
        return _postgres_db(url)
    return "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _embedded() -> Services:
    data = tempfile.mkdtemp(prefix="conveyor-test-services-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(CONVEYOR_DATA_DIR=data, CONVEYOR_LOG_LEVEL="WARNING")
    libc = ctypes.CDLL(None)
    parent = os.getpid()

    def die_with_session() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "services"], env=env, stdout=subprocess.PIPE, text=True,
        preexec_fn=die_with_session,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"conveyor services exited with {proc.wait()} before it served (see its output above)")
    urls = json.loads(line)

    def stop() -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)

    atexit.register(stop)
    return Services(
        admin_url=_postgres_db(urls["DATABASE_URL"]),
        redis_url=urls["REDIS_URL"],
        embedded=True,
    )


def choose() -> Services:
    services = _choose_servers()
    services = attrs.evolve(services, plain_redis_url=services.redis_url,
                            shards=int(os.environ.get("CONVEYOR_TEST_REDIS_SHARDS") or 0))
    which = os.environ.get("CONVEYOR_TEST_REDIS", "")
    if which not in ("", "plain", "cluster"):
        raise SystemExit(f"CONVEYOR_TEST_REDIS must be plain or cluster, got {which!r}")
    if which == "cluster":
        return attrs.evolve(services, redis_url=session_cluster().url, cluster=True)
    return services


_CLUSTER: list[Any] = []


def session_cluster() -> Any:
    """The session's Valkey Cluster (tests/redis_cluster.py), started on first use and stopped
    when the session ends. A test that kills one of its nodes restarts it before it returns."""
    if not _CLUSTER:
        from pathlib import Path

        from tests.redis_cluster import ValkeyCluster

        root = tempfile.mkdtemp(prefix="conveyor-test-cluster-")
        cluster = ValkeyCluster(Path(root))
        atexit.register(lambda: (cluster.stop(), shutil.rmtree(root, ignore_errors=True)))
        cluster.start()
        _CLUSTER.append(cluster)
    return _CLUSTER[0]


def _choose_servers() -> Services:
    mode = os.environ.get("CONVEYOR_TEST_SERVICES", "")
    if mode not in ("", "machine", "embedded"):
        raise SystemExit(f"CONVEYOR_TEST_SERVICES must be machine or embedded, got {mode!r}")
    admin = _admin_url()
    redis = os.environ.get("CONVEYOR_TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if mode == "machine" or (not mode and _answers(admin, 5432) and _answers(redis, 6379)):
        return Services(admin_url=admin, redis_url=redis, embedded=False)
    return _embedded()
