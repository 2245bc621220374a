"""Deployment tests: real nginx (the repository's own nginx/nginx.conf) in front of real nodes."""

from __future__ import annotations

import runpy
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from tests.conftest import free_port
from tests.faults.conftest import ROOT, cluster, make_cluster  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def render(upstreams: list[str], port: int) -> str:
    """nginx/nginx.conf with these upstream addresses and a loopback listen port."""
    script = runpy.run_path(str(ROOT / "scripts" / "render_nginx.py"))
    return str(script["render"](upstreams, f"127.0.0.1:{port}"))


class Nginx:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: trio.Process | None = None

    async def start(self, upstreams: list[str], edits: dict[str, str] | None = None) -> None:
        """Run the rendered config; `edits` replace text in it (each must be found)."""
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        conf = self.workdir / "nginx.conf"
        text = render(upstreams, self.port)
        for old, new in (edits or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        conf.write_text(text)
        directives = f"daemon off; pid {self.workdir}/nginx.pid; error_log {self.workdir}/error.log;"
        with (self.workdir / "stderr.log").open("wb") as stderr:
            self.proc = await trio.lowlevel.open_process(
                [binary, "-p", str(self.workdir), "-c", str(conf), "-g", directives],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                    await stream.aclose()
                    return
                except OSError:
                    if self.proc.poll() is not None:
                        raise RuntimeError((self.workdir / "stderr.log").read_text()) from None
                    await trio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the PID we started: master, then its workers
            with trio.move_on_after(10):
                await self.proc.wait()
            if self.proc.poll() is None:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[Callable[[list[str]], Nginx]]:
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    server = Nginx(workdir)
    yield server  # type: ignore[misc]
    with trio.CancelScope(shield=True):
        await server.stop()
