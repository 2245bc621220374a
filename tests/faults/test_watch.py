"""`conveyor watch` tails a feed across a restart of the node it watches, losing nothing."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import trio

from tests.conftest import free_port
from tests.faults.conftest import Cluster
from tests.helpers import wait_until


def printed(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_watch_resumes_across_a_restart_of_its_node(
    cluster: Cluster, tenant: str, tmp_path: Path
) -> None:
    watched = await cluster.start("w", port=free_port(), CONVEYOR_CONCURRENCY=4)
    other = await cluster.start("x", CONVEYOR_CONCURRENCY=4)
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    ids: list[str] = []
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "conveyor", "watch", "--url", watched.url, "--tenant", tenant, "--json"],
            stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        with trio.fail_after(90):
            await wait_until(lambda: "watching tenant" in err.read_text())
            async with httpx.AsyncClient(base_url=other.url, timeout=10) as client:

                async def submit(n: int) -> None:
                    for _ in range(n):
                        r = await client.post("/jobs", json={"tenantId": tenant, "type": "ledger", "payload": {"ms": 20}})
                        ids.append(r.json()["jobId"])

                def completed() -> set[object]:
                    return {e["jobId"] for e in printed(out) if e.get("status") == "COMPLETED"}

                await submit(20)
                await wait_until(lambda: completed() >= set(ids))
                watched.signal(signal.SIGTERM)  # drained: the watch's socket closes (1001)
                assert await watched.wait() == 0
                await submit(20)  # while it cannot connect
                await cluster.wait_terminal(tenant, len(ids))
                await watched.start()
                await submit(10)
                await wait_until(lambda: completed() >= set(ids))
        redis = cluster.queue_redis()
        try:
            log = [i for i, _ in redis.xrange(cluster.feed_key(tenant))]
        finally:
            redis.close()
    finally:
        proc.send_signal(signal.SIGINT)  # the PID we started
        with trio.move_on_after(10):
            await proc.wait()
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    notes = err.read_text()
    assert "reconnecting" in notes and "resuming after" in notes, notes
    assert [e["eventId"] for e in printed(out)] == log  # every event, once, in order
