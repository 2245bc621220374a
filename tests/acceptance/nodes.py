"""Real `conveyor serve` processes for the acceptance tests, killed by the PID we started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from conveyor.config import Config


class NodeProcess:
    def __init__(self, config: Config, log_path: Path, port: int = 0, **env: Any) -> None:
        self.log_path = log_path
        self.port = port  # 0: a free one at each start; fixed, so that a restart keeps it
        self.env = {
            **os.environ,
            "DATABASE_URL": config.database_url,
            "REDIS_URL": config.redis_url,
            "CONVEYOR_REDIS_PREFIX": config.redis_prefix,
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
