"""scripts/stack brings a whole stack up (nodes and nginx) and takes it down on Ctrl+C, leaving
no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import trio

from tests.conftest import REDIS_URL
from tests.faults.conftest import ROOT
from tests.helpers import wait_until


def free_ports(n: int) -> int:
    """The first of n consecutive free loopback ports."""
    for base in range(20_000, 60_000, 97):
        try:
            sockets = []
            for port in range(base, base + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_stack_up_and_down_leaves_no_process(
    database_url: str, redis_prefix: str, tenant: str, tmp_path: Path
) -> None:
    ports = free_ports(3)
    state = tmp_path / "stack"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CONVEYOR_REDIS_PREFIX": redis_prefix,
        "CONVEYOR_AUTH": "off",
        "CONVEYOR_STACK_PORT": str(ports + 2),
        "CONVEYOR_STACK_NODE_PORT": str(ports),
        "CONVEYOR_STACK_DIR": str(state),
    }
    url = f"http://127.0.0.1:{ports + 2}"
    with (tmp_path / "stack.log").open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [str(ROOT / "scripts" / "stack"), "2"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        with trio.fail_after(120):
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:

                async def ready() -> bool:
                    try:
                        return (await client.get("/health/ready")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await wait_until(ready, interval=0.2)
                r = await client.post("/jobs", json={"tenantId": tenant, "type": "sleep", "payload": {"delayMs": 0}})
                assert r.status_code == 201
                job_id = r.json()["jobId"]

                async def done() -> bool:
                    return (await client.get(f"/jobs/{job_id}")).json()["status"] == "COMPLETED"

                await wait_until(done)
            pids = [int(line) for line in (state / "pids").read_text().split()]
            assert len(pids) == 3 and all(alive(pid) for pid in pids)  # two nodes and nginx
            proc.send_signal(signal.SIGINT)  # Ctrl+C
            await proc.wait()
            await wait_until(lambda: not any(alive(pid) for pid in pids), interval=0.1)
    finally:
        if proc.poll() is None:  # a failure above: its trap still stops what it started
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(40, shield=True):
                await proc.wait()
    text = (tmp_path / "stack.log").read_text()
    assert "2 nodes behind" in text and "stopping 3 processes" in text
    for i in range(2):
        assert "stopped" in (state / f"node{i}.log").read_text()  # drained, not killed


def test_serve_script_with_postgresql_down_says_so_in_one_line() -> None:
    # it used to print a psycopg traceback from scripts/_createdb.py (issue 14)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    proc = subprocess.run(
        [str(ROOT / "scripts" / "serve")], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/conveyor", "REDIS_URL": REDIS_URL},
    )
    assert proc.returncode == 1, proc
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("conveyor: PostgreSQL unavailable at DATABASE_URL: ") and str(port) in line, line
