"""Browser tests: Playwright driving Debian's headless Chromium (launched by path) against real
nodes. Playwright's sync API runs in a worker thread (trio.to_thread), the nodes in processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.conftest import ROOT, Cluster, cluster, make_cluster  # noqa: F401  (fixtures)
from tests.integration.test_jobs import hooks  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

# screenshots the tests take, kept as artifacts (docs/dashboard.md shows copies of them)
ARTIFACTS = Path(os.environ.get("CONVEYOR_ARTIFACTS", ROOT / "artifacts")) / "screenshots"


def chromium() -> str:
    path = os.environ.get("CONVEYOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("Chromium is not installed: apt-get install chromium (.ci/run does)")
    return path


def tenant_key(nodes: Cluster, tenant: str) -> str:
    """A tenant and an API key of it, made with the CLI."""
    env = {**os.environ, "DATABASE_URL": nodes.config.database_url, "CONVEYOR_LOG_LEVEL": "WARNING"}
    for args in (["tenants", "create", tenant], ["keys", "create", "--tenant", tenant]):
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, check=True
        )
    return str(json.loads(done.stdout)["key"])
