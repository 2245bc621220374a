"""`conveyor jobs …` and `conveyor stats` against a real node with auth on: every command, in
text and with --json, and their errors (one line on stderr, exit 1 or 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import trio

from conveyor.node import Node
from tests.conftest import free_port
from tests.helpers import base_url, new_tenant


def cli(url: str, key: str | None, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_API_KEY", "CONVEYOR_URL")}
    env["CONVEYOR_URL"] = url
    if key is not None:
        env["CONVEYOR_API_KEY"] = key
    proc = subprocess.run([sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


async def test_jobs_commands_in_text_and_json(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(auth=True, max_attempts=1)
    url, key = base_url(node), await new_tenant(node, tenant)

    def run(*args: str) -> tuple[int, str, str]:
        return cli(url, key, *args)

    def scenario() -> None:
        code, out, err = run("jobs", "submit", "sleep", "--payload", '{"delayMs": 5}')
        assert code == 0 and err == "", err
        job_id = out.strip()
        assert len(job_id) == 36
        code, out, _ = run("jobs", "submit", "sleep", "--payload", '{"delayMs": 5}', "--json", "--wait")
        waited = json.loads(out)
        assert code == 0 and waited["status"] == "COMPLETED" and waited["tenantId"] == tenant
        code, out, _ = run("jobs", "submit", "data_processing", "--wait", "--payload",
                           '{"records": [{"v": "x"}], "operation": "sum", "field": "v"}')
        assert code == 3 and " FAILED " in out and "attempt 1/1" in out, out  # it ended badly
        code, out, _ = run("jobs", "get", job_id)
        assert code == 0 and f"id: {job_id}" in out and "status: COMPLETED" in out and "payload: {\"delayMs\": 5}" in out
        code, out, _ = run("jobs", "get", job_id, "--json")
        assert json.loads(out)["id"] == job_id
        code, out, _ = run("jobs", "list", "--limit", "2")
        lines = out.splitlines()
        assert code == 0 and len(lines) == 2 and all(" attempt " in line for line in lines), out
        code, out, _ = run("jobs", "list", "--json", "--status", "COMPLETED")
        listed = [json.loads(line) for line in out.splitlines()]
        assert {j["status"] for j in listed} == {"COMPLETED"} and job_id in {j["id"] for j in listed}
        code, out, _ = run("jobs", "submit", "sleep", "--payload", '{"delayMs": 60000}')
        long = out.strip()
        code, out, _ = run("jobs", "cancel", long)
        assert code == 0 and out.startswith(long) and ("CANCELLED" in out or "being stopped" in out), out
        code, out, _ = run("jobs", "submit", "sleep", "--payload", '{"delayMs": 1}', "--json")
        assert code == 0 and set(json.loads(out)) == {"jobId"}
        code, out, _ = run("stats")
        assert code == 0 and out.startswith(f"tenant {tenant}: ") and "unfinished" in out, out
        code, out, _ = run("stats", "--json")
        assert code == 0 and json.loads(out)["tenantId"] == tenant
        # retry after it has ended cancelled
        for _ in range(100):
            code, out, _ = run("jobs", "get", long, "--json")
            if json.loads(out)["status"] == "CANCELLED":
                break
        code, out, _ = run("jobs", "retry", long, "--max-attempts", "1", "--json")
        assert code == 0 and json.loads(out)["status"] == "PENDING", out
        run("jobs", "cancel", long)

    with trio.fail_after(180):
        await trio.to_thread.run_sync(scenario)


async def test_jobs_command_errors_are_one_line(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(auth=True)
    url, key = base_url(node), await new_tenant(node, tenant)

    def scenario() -> None:
        cases = [
            (cli(url, key, "jobs", "get", "00000000-0000-4000-8000-000000000000"), 1, "conveyor: 404: Job not found"),
            (cli(url, key, "jobs", "submit", "fax"), 1, "conveyor: 400: Validation failed; type: must be one of"),
            (cli(url, key, "jobs", "submit", "sleep", "--payload", "{nope"), 2, "conveyor: --payload is not JSON"),
            (cli(url, None, "jobs", "list"), 1, "conveyor: 401: Unauthorized: missing API key"),
            (cli(f"http://127.0.0.1:{free_port()}", key, "stats"), 1, "conveyor: cannot reach http://127.0.0.1:"),
            (cli(url, key, "jobs", "list", "--limit", "0"), 2, "conveyor: --limit must be at least 1"),
        ]
        for (code, out, err), want_code, want in cases:
            assert code == want_code and out == "", (want, code, out, err)
            (line,) = err.splitlines()
            assert line.startswith(want), (want, line)

    with trio.fail_after(120):
        await trio.to_thread.run_sync(scenario)


async def test_schedules_commands_and_timing_options(start_node: Any, tenant: str) -> None:
    node: Node = await start_node(auth=True)
    url, key = base_url(node), await new_tenant(node, tenant)

    def run(*args: str) -> tuple[int, str, str]:
        return cli(url, key, *args)

    def scenario() -> None:
        code, out, err = run("schedules", "put", "nightly", "--cron", "0 3 * * *", "--timezone", "Asia/Tokyo",
                             "--type", "sleep", "--payload", '{"delayMs": 1}', "--priority", "7", "--json")
        made = json.loads(out)
        assert code == 0 and err == "" and made["cron"] == "0 3 * * *" and made["job"]["priority"] == 7, err
        code, out, _ = run("schedules", "put", "often", "--every", "1h30m", "--type", "sleep", "--payload", '{"delayMs": 1}')
        assert code == 0 and out.startswith("often  every 1h30m  sleep  next "), out
        code, out, _ = run("schedules", "list")
        assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["nightly", "often"], out
        code, out, _ = run("schedules", "get", "nightly")
        assert code == 0 and "timezone: Asia/Tokyo" in out and "cron: 0 3 * * *" in out, out
        code, out, _ = run("schedules", "pause", "often")
        assert code == 0 and "  paused  " in out, out
        code, out, _ = run("schedules", "resume", "often", "--json")
        assert code == 0 and json.loads(out)["paused"] is False
        code, out, _ = run("schedules", "delete", "often")
        assert (code, out.strip()) == (0, "deleted often")
        code, out, err = run("schedules", "get", "often")
        assert (code, out) == (1, "") and err.strip() == "conveyor: 404: Schedule not found", err
        code, _, err = run("schedules", "put", "bad", "--every", "10ms", "--type", "sleep", "--payload", '{"delayMs": 1}')
        assert code == 1 and err.startswith("conveyor: ") and "every" in err and len(err.splitlines()) == 1, err
        code, _, err = run("schedules", "put", "x", "--cron", "* * * * *", "--every", "1m", "--type", "sleep")
        assert code == 2 and "not allowed with argument" in err, err
        code, _, err = run("schedules", "put", "x", "--every", "1m", "--type", "sleep", "--payload", "[1]")
        assert (code, err.strip()) == (2, "conveyor: --payload must be a JSON object")
        # submit's timing options
        code, out, _ = run("jobs", "submit", "sleep", "--payload", '{"delayMs": 1}', "--delay-ms", "600000",
                           "--priority", "0", "--json")
        later = json.loads(run("jobs", "get", json.loads(out)["jobId"], "--json")[1])
        assert code == 0 and later["status"] == "PENDING" and later["priority"] == 0
        code, out, _ = run("jobs", "submit", "sleep", "--payload", '{"delayMs": 1}', "--run-at", "2026-01-01T00:00:00+00:00",
                           "--wait", "--wait-timeout", "30")
        assert code == 0 and " COMPLETED " in out, out  # a runAt in the past is due at once
        code, _, err = run("jobs", "submit", "sleep", "--payload", '{"delayMs": 1}', "--run-at", "tomorrow")
        assert code == 1 and "runAt" in err, err

    await trio.to_thread.run_sync(scenario)
