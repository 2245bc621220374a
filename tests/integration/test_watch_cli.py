"""`conveyor watch` as a new user meets it (issue 14): piped into a reader that leaves, started
with no node listening, and started without an API key against a node with auth on."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import trio

from conveyor.node import Node
from tests.conftest import free_port
from tests.helpers import base_url, bearer, new_tenant


async def _watch(*args: str, key: str | None = None) -> trio.Process:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_API_KEY"}
    if key is not None:
        env["CONVEYOR_API_KEY"] = key
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "conveyor", "watch", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "PYTHONUNBUFFERED": "1"},
    )


async def _read_all(stream: Any) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_watch_ends_when_its_reader_goes_away(start_node: Any, tenant: str) -> None:
    # `conveyor watch | head` used to loop on "disconnected (Broken pipe); reconnecting"
    node: Node = await start_node(auth=True)
    key = await new_tenant(node, tenant)
    proc = await _watch("--url", base_url(node), key=key)
    try:
        with trio.fail_after(60):
            async with httpx.AsyncClient(base_url=base_url(node), headers=bearer(key)) as client:
                assert proc.stdout is not None and proc.stderr is not None
                got = b""
                while b"\n" not in got:  # the first event line, then the reader leaves
                    await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 1}})
                    with trio.move_on_after(0.5):
                        got += await proc.stdout.receive_some(4096)
                await proc.stdout.aclose()
                for _ in range(5):  # more events: the next line it prints finds the pipe closed
                    await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 1}})
                assert await proc.wait() == 0
                err = (await _read_all(proc.stderr)).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "reconnecting" not in err and "Traceback" not in err and "Exception ignored" not in err, err


async def test_watch_without_a_key_says_which_variable_to_set(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(auth=True)
    proc = await _watch("--url", base_url(node))
    with trio.fail_after(30):
        assert await proc.wait() == 1
    assert proc.stderr is not None
    err = (await _read_all(proc.stderr)).decode().strip()
    assert err == "conveyor watch: this node needs an API key: set CONVEYOR_API_KEY " \
                  "(conveyor keys create --tenant T makes one)", err


async def test_watch_with_no_node_listening_says_so_and_keeps_trying() -> None:
    # it used to say only "disconnected (HandshakeError)"
    port = free_port()
    proc = await _watch("--url", f"http://127.0.0.1:{port}", "--tenant", "t", key="cvk_x")
    assert proc.stderr is not None
    data = b""
    with trio.move_on_after(20):
        while data.count(b"\n") < 2:  # two attempts, so it goes on after the first
            chunk = await proc.stderr.receive_some(4096)
            if not chunk:
                break
            data += chunk
    alive = proc.poll() is None
    proc.kill()
    await proc.wait()
    err = data.decode()
    assert alive, err
    first = err.splitlines()[0]
    assert first.startswith("conveyor watch: disconnected (no node answers: ") and "reconnecting in" in first, err
    assert f"127.0.0.1:{port}" in first, err
