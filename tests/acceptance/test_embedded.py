"""Issue 12: `conveyor serve` on its own PostgreSQL and Valkey when no URL is set.

- A fresh install, as README says (a new venv, the project installed from its directory, not
  editable), with HOME in a temporary directory, a PATH without the machine's PostgreSQL and
  Redis, and neither URL set: the node serves, runs a job a WebSocket hears about, stops with
  every process it started, keeps the job across a restart, starts again after kill -9, and loses
  none of 500 jobs when its Valkey is killed with -9 in the middle of them.
- Two nodes on one data directory share one set of servers, and both run jobs; when the owner is
  killed, the other takes the servers over.
- Bad configurations: one line each and an exit code, never a traceback, nothing left running.

Processes are killed by the PIDs these tests started (or read from the servers' own pid files).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from conveyor.embedded.children import alive
from tests.faults.conftest import ROOT
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

SERVER_BINARIES = ("postgres", "pg_ctl", "initdb", "psql", "redis-server", "valkey-server", "redis-cli")


def descendants(pid: int) -> set[int]:
    """Every live process below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class Serve:
    """One `conveyor serve` process with its own log."""

    def __init__(self, conveyor: list[str], env: dict[str, str], log: Path) -> None:
        self.conveyor, self.env, self.log = conveyor, env, log
        self.proc: trio.Process | None = None
        self.url = ""

    async def start(self) -> str:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = await trio.lowlevel.open_process(
                [*self.conveyor, "serve", "--port", "0"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        while True:
            text = self.log.read_text(errors="replace")[offset:]
            if found := re.search(r"serving on (http://127\.0\.0\.1:\d+)", text):
                self.url = found[1]
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"conveyor serve exited with {self.proc.returncode}:\n{text[-3000:]}")
            await trio.sleep(0.05)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def kill(self) -> None:
        """SIGKILL the process we started (by its PID) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with trio.CancelScope(shield=True):
                await self.proc.wait()


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv with conveyor installed as README's install does (from the directory, not
    editable); yields the venv."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True, timeout=900,
    )
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


def bare_env(venv: Path, home: Path, tools: Path) -> dict[str, str]:
    """What a bare machine gives: HOME, a PATH with the venv and no database servers, no URLs."""
    tools.mkdir(exist_ok=True)
    if os.geteuid() == 0:  # as root the embedded PostgreSQL needs a system user (useradd)
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        (tools / "useradd").symlink_to(useradd)
    path = f"{venv / 'bin'}:{tools}"
    for binary in SERVER_BINARIES:
        assert shutil.which(binary, path=path) is None, binary
    return {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", "CONVEYOR_AUTH": "off"}


async def submit(client: httpx.AsyncClient, tenant: str, n: int, delay_ms: int) -> list[str]:
    job = {"tenantId": tenant, "type": "sleep", "payload": {"delayMs": delay_ms}}
    if n == 1:
        r = await client.post("/jobs", json=job)
        assert r.status_code == 201, r.text
        return [r.json()["jobId"]]
    r = await client.post("/jobs/batch", json={"jobs": [job] * n})
    assert r.status_code == 201, r.text
    return list(r.json()["jobIds"])


async def completed(client: httpx.AsyncClient, tenant: str) -> int:
    r = await client.get("/jobs", params={"tenantId": tenant, "status": "COMPLETED", "limit": 1})
    return int(r.json()["total"]) if r.status_code == 200 else -1


async def test_fresh_install_runs_on_embedded_servers_and_loses_nothing(fresh_install: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = bare_env(fresh_install, home, tmp_path / "tools")
    data = home / ".local" / "share" / "conveyor"  # the user's data directory
    node = Serve([str(fresh_install / "bin" / "conveyor")], env, tmp_path / "node.log")
    try:
        with trio.fail_after(240):
            url = await node.start()
            log = node.log.read_text()
            assert "embedded PostgreSQL 18" in log and f"data in {data / 'postgres'}" in log, log
            assert "psql postgresql://postgres@127.0.0.1:" in log and "redis-cli -p " in log, log
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                assert (await client.get("/health")).status_code == 200
                async with open_websocket_url(url.replace("http://", "ws://") + "/ws") as ws:
                    assert json.loads(await ws.get_message())["type"] == "CONNECTED"
                    await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": "t1"}))
                    assert json.loads(await ws.get_message())["type"] == "SUBSCRIBED"
                    (job_id,) = await submit(client, "t1", 1, 10)
                    while True:
                        msg = json.loads(await ws.get_message())
                        if msg.get("jobId") == job_id and msg.get("status") == "COMPLETED":
                            break
                assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "COMPLETED"

            # SIGINT stops the node and every process it started
            assert node.proc is not None
            started = descendants(node.proc.pid)
            assert len(started) >= 2, started  # the postmaster (and its workers) and valkey-server
            node.proc.send_signal(signal.SIGINT)
            assert await node.wait() == 0
            await wait_until(lambda: not any(alive(p) for p in started))

            # a restart still has the job
            url = await node.start()
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                listed = (await client.get("/jobs", params={"tenantId": "t1"})).json()
                assert [j["id"] for j in listed["jobs"]] == [job_id]

            # kill -9: the servers go with the node, and the next start works
            started = descendants(node.proc.pid)
            await node.kill()
            with trio.fail_after(20):
                await wait_until(lambda: not any(alive(p) for p in started), interval=0.1)
            url = await node.start()

            # kill -9 of the embedded Valkey during 500 jobs loses none of them
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                await submit(client, "t500", 500, 200)
                await wait_until(lambda: _at_least(completed(client, "t500"), 1))  # some have run
                valkey = int((data / "valkey" / "valkey.pid").read_text())
                assert valkey in descendants(node.proc.pid)
                os.kill(valkey, signal.SIGKILL)
                with trio.fail_after(120):
                    await wait_until(lambda: _is(completed(client, "t500"), 500), interval=0.2)
                assert (await client.get("/jobs", params={"tenantId": "t500", "limit": 1})).json()["total"] == 500
            assert "embedded Valkey is back" in node.log.read_text()
            started = descendants(node.proc.pid)
            node.proc.send_signal(signal.SIGINT)
            assert await node.wait() == 0
            await wait_until(lambda: not any(alive(p) for p in started))
    finally:
        await node.kill()


async def _is(value: Any, wanted: int) -> bool:
    return bool(await value == wanted)


async def _at_least(value: Any, wanted: int) -> bool:
    return bool(await value >= wanted)  # completed() answers -1 for an error: never enough


def dev_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("CONVEYOR_")}
    return {**env, "CONVEYOR_DATA_DIR": str(data), "CONVEYOR_AUTH": "off", **extra}


async def started_jobs(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("conveyor_jobs_started_total"))


async def test_two_nodes_on_one_data_dir_share_the_servers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    conveyor = [sys.executable, "-m", "conveyor"]
    a = Serve(conveyor, dev_env(data), tmp_path / "a.log")
    b = Serve(conveyor, dev_env(data), tmp_path / "b.log")
    try:
        with trio.fail_after(180):
            url_a = await a.start()
            url_b = await b.start()
            assert "embedded PostgreSQL: joined the one of" in b.log.read_text()
            assert a.proc is not None and b.proc is not None
            assert descendants(b.proc.pid) == set(), "the second node started servers of its own"
            async with httpx.AsyncClient(base_url=url_a, timeout=30) as ca, httpx.AsyncClient(base_url=url_b, timeout=30) as cb:
                await submit(ca, "shared", 200, 50)
                await submit(cb, "shared", 200, 50)
                await wait_until(lambda: _is(completed(ca, "shared"), 400), interval=0.2)
                assert await started_jobs(ca) > 0 and await started_jobs(cb) > 0
                # the owner dies: the other node takes the servers over and goes on
                await a.kill()
                await wait_until(lambda: descendants(b.proc.pid), interval=0.1)
                await submit(cb, "shared", 20, 10)
                await wait_until(lambda: _is(completed(cb, "shared"), 420), interval=0.2)
            assert "taking them over" in b.log.read_text()
            started = descendants(b.proc.pid)
            b.proc.send_signal(signal.SIGINT)
            assert await b.wait() == 0
            await wait_until(lambda: not any(alive(p) for p in started))
    finally:
        await a.kill()
        await b.kill()


async def test_nodes_started_together_on_a_new_data_dir_all_serve(tmp_path: Path) -> None:
    """One initialises and owns; the others wait for its database, not just its server (as
    scripts/stack starts them)."""
    data = tmp_path / "data"
    nodes = [Serve([sys.executable, "-m", "conveyor"], dev_env(data), tmp_path / f"{i}.log") for i in range(3)]
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.start)
            for node in nodes:
                async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
                    await submit(client, "together", 1, 1)
            async with httpx.AsyncClient(base_url=nodes[0].url, timeout=30) as client:
                await wait_until(lambda: _is(completed(client, "together"), 3), interval=0.1)
    finally:
        for node in nodes:
            await node.kill()


async def test_a_dead_server_is_restarted_readiness_says_so_and_a_second_signal_still_stops_them(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    node = Serve([sys.executable, "-m", "conveyor"], dev_env(data, CONVEYOR_RECONCILE_SECONDS="1"), tmp_path / "n.log")
    try:
        with trio.fail_after(180):
            url = await node.start()
            assert node.proc is not None
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:

                async def ready() -> int:
                    return (await client.get("/health/ready")).status_code

                assert await ready() == 200
                # Valkey dies: readiness says so (its ping fails at once) until it is back
                valkey = int((data / "valkey" / "valkey.pid").read_text())
                os.kill(valkey, signal.SIGKILL)

                async def redis_down() -> bool:
                    r = await client.get("/health/ready")
                    return r.status_code == 503 and r.json()["checks"]["redis"]["ok"] is False

                await wait_until(redis_down, interval=0.02)
                await wait_until(lambda: _is(ready(), 200), interval=0.1)
                # PostgreSQL's postmaster dies: it is started again, and jobs run
                postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
                os.kill(postmaster, signal.SIGKILL)
                await wait_until(lambda: "embedded PostgreSQL is back" in node.log.read_text(), interval=0.1)
                await wait_until(lambda: _is(ready(), 200), interval=0.1)
                await submit(client, "after", 1, 10)
                await wait_until(lambda: _is(completed(client, "after"), 1), interval=0.1)
                log = node.log.read_text()
                assert f"embedded Valkey (pid {valkey}) exited with signal SIGKILL" in log, log
                assert f"embedded PostgreSQL (pid {postmaster}) exited with signal SIGKILL" in log, log
                # a long job holds the drain; the second signal stops at once, servers included
                await submit(client, "long", 1, 60_000)

                async def running() -> bool:
                    return bool((await client.get("/stats", params={"tenantId": "long"})).json()["running"])

                await wait_until(running, interval=0.05)
                started = descendants(node.proc.pid)
                node.proc.send_signal(signal.SIGINT)
                await wait_until(lambda: "draining" in node.log.read_text())
                node.proc.send_signal(signal.SIGINT)
                with trio.fail_after(30):
                    await node.wait()
                await wait_until(lambda: not any(alive(p) for p in started))
                assert "second signal: stopping now" in node.log.read_text()
    finally:
        await node.kill()


def one_line(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "serve", *args], env={**env, "CONVEYOR_LOG_LEVEL": "ERROR"},
        capture_output=True, text=True, timeout=120,
    )
    return done.returncode, done.stderr.strip().splitlines()


def test_bad_configurations_give_one_line_and_an_exit_code(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # a node on a public address that forgot the URLs
    code, lines = one_line(dev_env(data, CONVEYOR_AUTH="on"), "--host", "0.0.0.0", "--port", "0")
    assert code == 2 and lines == [
        "conveyor: invalid configuration: DATABASE_URL and REDIS_URL not set: a node on '0.0.0.0' would keep "
        "its jobs in embedded servers on this machine; set DATABASE_URL and REDIS_URL, or CONVEYOR_EMBEDDED=on "
        "if that is what you want"
    ]
    assert not data.exists()
    code, lines = one_line(dev_env(data, CONVEYOR_EMBEDDED="off"), "--port", "0")
    assert code == 2 and lines == ["conveyor: invalid configuration: DATABASE_URL and REDIS_URL not set, and CONVEYOR_EMBEDDED=off"]
    # a data directory that cannot be made
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, lines = one_line(dev_env(blocker / "data"), "--port", "0")
    assert code == 2 and lines == [
        f"conveyor: invalid configuration: cannot use the data directory {blocker / 'data'} (CONVEYOR_DATA_DIR): Not a directory"
    ]
    # the node's port in use
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = one_line(dev_env(data), "--port", str(port))
        assert code == 1 and lines == [f"conveyor: cannot listen on 127.0.0.1:{port}: Address already in use"], lines
        # an embedded server's port in use by another program
        ports = json.loads((data / "embedded.json").read_text())
        (data / "embedded.json").write_text(json.dumps({**ports, "valkey": port}))
        code, lines = one_line(dev_env(data), "--port", "0")
        assert code == 1 and lines == [
            f"conveyor: embedded services: port {port} of the embedded Valkey is in use by another program: "
            f"stop it, or delete {data / 'embedded.json'} to choose new ports"
        ], lines
    (data / "embedded.json").write_text(json.dumps(ports))
    # a server that will not start, with its own log line
    version = data / "postgres" / "PG_VERSION"
    real = version.read_text()
    version.write_text("9\n")
    code, lines = one_line(dev_env(data), "--port", "0")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("conveyor: embedded services: the embedded PostgreSQL did not start: ") and "FATAL" in lines[0]
    assert f"(log: {data / 'postgres.log'})" in lines[0]
    version.write_text(real)
    # and after all of that, no server is left running: each removes its pid file when it stops
    assert not (data / "postgres" / "postmaster.pid").exists()
    assert not (data / "valkey" / "valkey.pid").exists()
