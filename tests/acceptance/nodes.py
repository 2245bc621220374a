"""Real `conveyor serve` processes for the acceptance tests, killed by the PID we started: NodeProcess,
and served_with_auth, the one node of a module that attacks it (test_hostile, test_openapi)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import psycopg
import pytest
import trio

from conveyor.config import Config
from tests.conftest import ADMIN_URL, REDIS_URL, _db_url, delete_prefix
from tests.helpers import ADMIN_KEY


class NodeProcess:
    def __init__(self, config: Config, log_path: Path, port: int = 0, **env: Any) -> None:
        self.log_path = log_path
        self.port = port  # 0: a free one at each start; fixed, so that a restart keeps it
        self.env = {
            **os.environ,
            "DATABASE_URL": config.database_url,
            "REDIS_URL": config.redis_url,
            "CONVEYOR_REDIS_PREFIX": config.redis_prefix,
            "CONVEYOR_REDIS_SHARDS": str(config.redis_shards),
            "CONVEYOR_BACKOFF_BASE_MS": str(config.backoff_base_ms),
            "CONVEYOR_BACKOFF_CAP_MS": str(config.backoff_cap_ms),
            "CONVEYOR_AUTH": "on" if config.auth else "off",
            "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "on" if config.webhook_allow_private else "off",
            "CONVEYOR_TENANT_SUBMIT_RATE": str(config.tenant_submit_rate),
            "CONVEYOR_TENANT_READ_RATE": str(config.tenant_read_rate),
            **{k: str(v) for k, v in env.items()},
        }
        self.proc: trio.Process | None = None
        self.url = ""

    async def start(self) -> str:
        """Start the node and wait (callers hold a deadline) until it serves; returns its URL."""
        log = self.log_path.open("ab")
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "conveyor", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        while True:
            text = self.log_path.read_text(errors="replace")
            found = re.findall(r"serving on (http://127\.0\.0\.1:\d+)", text)
            if len(found) > self.starts_seen:
                self.starts_seen += 1
                self.url = found[-1]
                return self.url
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{text[-3000:]}")
            await trio.sleep(0.05)

    starts_seen = 0

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def kill(self) -> None:
        """SIGKILL the process we started (by its PID) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


@attrs.define
class Target:
    url: str
    log: Path
    database_url: str
    prefix: str
    keys: dict[str, str]
    accepted: set[str] = attrs.Factory(set)  # job ids answered 201

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def check(self, response: httpx.Response) -> httpx.Response:
        """Every answer: not a server error, JSON that says what was wrong."""
        assert response.status_code < 500, (response.status_code, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), str) and body["error"], body
        elif response.status_code == 201 and response.request.url.path.startswith("/jobs"):
            body = response.json()
            self.accepted.update(body.get("jobIds") or [body["jobId"]])
        return response

    def assert_clean(self, jobs_checked: bool = True) -> None:
        """No traceback or crash in the node's log, and only accepted jobs in PostgreSQL (when
        every request went through check)."""
        text = self.log.read_text(errors="replace")
        for marker in ("Traceback", "crashed", "unhandled error", "restarting"):
            assert marker not in text, text[text.index(marker) - 2000 : text.index(marker) + 2000]
        if not jobs_checked:
            return
        with psycopg.connect(self.database_url) as conn:
            # jobs made by schedules' fires were accepted as schedules
            stored = {row[0] for row in conn.execute("SELECT id::text FROM jobs WHERE schedule_name IS NULL")}
        assert stored == self.accepted


def _cli(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@contextmanager
def served_with_auth(template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A `conveyor serve` with auth on, an admin key and tenants acme and umbrella, its own
    database and Redis prefix, removed after."""
    name = f"conveyor_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    prefix = f"ctest-{secrets.token_hex(6)}"
    log = tmp_path_factory.mktemp("hostile") / "node.log"
    env = {
        **os.environ,
        "DATABASE_URL": _db_url(name),
        "REDIS_URL": REDIS_URL,
        "CONVEYOR_REDIS_PREFIX": prefix,
        "CONVEYOR_AUTH": "on",
        "CONVEYOR_ADMIN_KEY": ADMIN_KEY,
        # the fuzzer is one client sending as fast as it can: let every request through to the
        # rules under test (the limits have tests of their own)
        "CONVEYOR_TENANT_SUBMIT_RATE": "0",
        "CONVEYOR_TENANT_READ_RATE": "0",
        "CONVEYOR_CONCURRENCY": "16",
        "CONVEYOR_SLEEP_MAX_MS": "1000",
    }
    keys = {}
    for tenant in ("acme", "umbrella"):
        _cli(env, "tenants", "create", tenant)
        keys[tenant] = _cli(env, "keys", "create", "--tenant", tenant)["key"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "serve", "--host", "127.0.0.1", "--port", "0"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"serving on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Target(found[1], log, _db_url(name), prefix, keys)
    finally:
        proc.kill()
        proc.wait(10)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        delete_prefix(REDIS_URL, prefix)
