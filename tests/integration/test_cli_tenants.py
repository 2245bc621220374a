"""`conveyor tenants` and `conveyor keys`: the CLI manages tenants and keys in PostgreSQL, and a
key it creates works on a running node until the CLI revokes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import trio

from conveyor.node import Node
from tests.helpers import base_url, bearer, wait_until


def conveyor(database_url: str, *args: str) -> tuple[int, Any, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={**os.environ, "DATABASE_URL": database_url, "CONVEYOR_LOG_LEVEL": "WARNING"},
        capture_output=True, text=True, timeout=60,
    )
    out = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc.returncode, out, proc.stderr.strip()


async def test_cli_creates_lists_and_revokes(start_node: Any, database_url: str) -> None:
    node: Node = await start_node(auth=True, auth_refresh_seconds=0.2)

    def run(*args: str) -> tuple[int, Any, str]:
        return conveyor(database_url, *args)

    with trio.fail_after(60):
        code, tenant, _ = await trio.to_thread.run_sync(lambda: run("tenants", "create", "acme", "--max-running", "4"))
        assert code == 0 and tenant["overrides"] == {"maxRunning": 4}
        code, _, err = await trio.to_thread.run_sync(lambda: run("tenants", "create", "acme"))
        assert code == 1 and err == "conveyor: tenant acme already exists"
        code, _, err = await trio.to_thread.run_sync(lambda: run("tenants", "create", "bad id"))
        assert code == 2 and "Validation failed: id must be" in err
        code, updated, _ = await trio.to_thread.run_sync(lambda: run("tenants", "set", "acme", "--submit-rate", "50"))
        assert code == 0 and updated["overrides"] == {"maxRunning": 4, "submitRate": 50.0}
        code, listed, _ = await trio.to_thread.run_sync(lambda: run("tenants", "list"))
        assert [t["id"] for t in listed] == ["acme"]

        code, created, _ = await trio.to_thread.run_sync(lambda: run("keys", "create", "--tenant", "acme", "--name", "deploy"))
        assert code == 0 and created["key"].startswith(f"cvk_{created['id']}_")
        code, _, err = await trio.to_thread.run_sync(lambda: run("keys", "create", "--tenant", "ghost"))
        assert code == 1 and "tenant ghost not found" in err
        code, keys_listed, _ = await trio.to_thread.run_sync(lambda: run("keys", "list", "--tenant", "acme"))
        assert [k["id"] for k in keys_listed] == [created["id"]] and "key" not in keys_listed[0]

        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            ok = await client.post("/jobs", json={"type": "sleep", "payload": {"delayMs": 0}}, headers=bearer(created["key"]))
            assert ok.status_code == 201
            code, revoked, _ = await trio.to_thread.run_sync(lambda: run("keys", "revoke", "--tenant", "acme", created["id"]))
            assert code == 0 and revoked["revokedAt"]
            code, _, err = await trio.to_thread.run_sync(lambda: run("keys", "revoke", "--tenant", "acme", "nope"))
            assert code == 1 and "has no key nope" in err

            async def refused() -> bool:
                r = await client.get("/jobs", headers=bearer(created["key"]))
                return r.status_code == 401

            await wait_until(refused)  # the node hears of a CLI revocation within its refresh


def test_cli_answers_one_json_line_as_readme_shows(database_url: str) -> None:
    # README shows `keys create` printing {"id": ..., "key": "cvk_..."}; it used to print indented JSON
    for args in (["tenants", "create", "solo"], ["keys", "create", "--tenant", "solo"], ["tenants", "list"]):
        proc = subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            env={**os.environ, "DATABASE_URL": database_url, "CONVEYOR_LOG_LEVEL": "WARNING"},
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        (line,) = proc.stdout.splitlines()
        assert json.loads(line)


def test_output_to_a_closed_pipe_ends_quietly(database_url: str) -> None:
    # `conveyor tenants list | head -c 10`, as a user would pipe it: no traceback
    assert conveyor(database_url, "tenants", "create", "piped")[0] == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "tenants", "list"],
        env={**os.environ, "DATABASE_URL": database_url, "CONVEYOR_LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err
