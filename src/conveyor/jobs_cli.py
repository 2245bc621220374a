"""`conveyor jobs …` and `conveyor stats`: the job API from the command line, on conveyor.client
(`conveyor schedules …`, in schedules_cli.py, shares what is here).

The node is CONVEYOR_URL (or --url), the key CONVEYOR_API_KEY. Output is readable by default and
JSON with --json (one JSON document, or one line per job for `jobs list`). An error is one line
on stderr: exit 1 for what the node refused or could not do, 2 for a wrong command line. With
`submit --wait`, the exit status says how the job ended: 0 COMPLETED, 3 FAILED or CANCELLED.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx

from .client import ApiError, Client, Job, WaitTimeout

DEFAULT_URL = "http://127.0.0.1:3000"
ENDED_BADLY = 3


def add_parsers(sub: Any) -> argparse.ArgumentParser:
    """The jobs and stats commands; returns the options every client command shares."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"a node, or nginx in front of nodes (default CONVEYOR_URL or {DEFAULT_URL})")
    common.add_argument("--tenant", help="the tenant (only with auth off: a key names its tenant)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    jobs_p = sub.add_parser("jobs", help="submit, list, get, cancel and retry jobs (key: CONVEYOR_API_KEY)")
    actions = jobs_p.add_subparsers(dest="action", required=True)
    submit_p = actions.add_parser("submit", parents=[common], help="submit a job; prints its id")
    submit_p.add_argument("type", help="the job type (sleep, email, webhook, data_processing, noop, or yours)")
    submit_p.add_argument("--payload", default="{}", help="the payload, a JSON object (default {})")
    submit_p.add_argument("--max-attempts", type=int, help="attempts before it fails (default: the node's)")
    submit_p.add_argument("--timeout-ms", type=int, help="each attempt's deadline (default: the type's)")
    submit_p.add_argument("--priority", type=int, help="0 (most urgent) to 9 (default 5)")
    later = submit_p.add_mutually_exclusive_group()
    later.add_argument("--delay-ms", type=int, help="run no earlier than this long from now")
    later.add_argument("--run-at", help="run no earlier than this, ISO 8601 with an offset")
    submit_p.add_argument("--wait", action="store_true", help="wait until it ends and print it (exit 3 unless COMPLETED)")
    submit_p.add_argument("--wait-timeout", type=float, default=None, help="give up waiting after this many seconds")
    list_p = actions.add_parser("list", parents=[common], help="list jobs, newest first")
    list_p.add_argument("--status", help="PENDING, RUNNING, COMPLETED, FAILED or CANCELLED")
    list_p.add_argument("--type", help="only jobs of this type")
    list_p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    get_p = actions.add_parser("get", parents=[common], help="a job, with its payload and result")
    cancel_p = actions.add_parser("cancel", parents=[common], help="cancel a waiting or running job")
    retry_p = actions.add_parser("retry", parents=[common], help="run a FAILED or CANCELLED job again")
    retry_p.add_argument("--max-attempts", type=int, help="attempts it gets this time (default: the node's)")
    for action_p in (get_p, cancel_p, retry_p):
        action_p.add_argument("job_id")
    sub.add_parser("stats", parents=[common], help="the tenant's queue now: unfinished, running, waiting")
    return common


def main(args: argparse.Namespace, run: Callable[[Client, argparse.Namespace], int] | None = None) -> int:
    """Run a client command (`run`, or the jobs and stats commands) against the node."""
    url = args.url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL
    key = os.environ.get("CONVEYOR_API_KEY") or None
    try:
        with Client(url, key, tenant=args.tenant) as client:
            return (run or _run)(client, args)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except ApiError as exc:
        return _fail(str(exc), 1)
    except WaitTimeout as exc:
        return _fail(str(exc), 1)
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach {url}: {exc}", 1)


class UsageError(Exception):
    pass


def _fail(message: str, code: int) -> int:
    print(f"conveyor: {' '.join(message.split())}", file=sys.stderr)
    return code


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.command == "stats":
        stats = client.stats()
        show(args, {"tenantId": stats.tenant_id, "unfinished": stats.unfinished, "running": stats.running,
                     "waiting": stats.waiting},
              f"tenant {stats.tenant_id}: {stats.unfinished} unfinished, {stats.running} running, "
              f"{stats.waiting} waiting")
        return 0
    match args.action:
        case "submit":
            return _submit(client, args)
        case "list":
            if args.limit < 1:
                raise UsageError("--limit must be at least 1")
            for n, job in enumerate(client.list(status=args.status, type=args.type)):
                if n >= args.limit:
                    break
                print(json.dumps(job.raw) if args.json else line_of(job))
            return 0
        case "get":
            job = client.get(args.job_id)
            show(args, job.raw, details_of(job))
        case "cancel":
            job = client.cancel(args.job_id)
            show(args, job.raw, line_of(job) + ("  (being stopped)" if job.status == "RUNNING" else ""))
        case "retry":
            job = client.retry(args.job_id, args.max_attempts)
            show(args, job.raw, line_of(job))
    return 0


def payload_of(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError("--payload must be a JSON object")
    return payload


def _submit(client: Client, args: argparse.Namespace) -> int:
    job_id = client.submit(
        args.type, payload_of(args.payload), max_attempts=args.max_attempts, timeout_ms=args.timeout_ms,
        priority=args.priority, delay_ms=args.delay_ms, run_at=args.run_at,
    )
    if not args.wait:
        show(args, {"jobId": job_id}, job_id)
        return 0
    job = client.wait(job_id, args.wait_timeout)
    show(args, job.raw, line_of(job))
    return 0 if job.status == "COMPLETED" else ENDED_BADLY


def show(args: argparse.Namespace, body: Any, text: str) -> None:
    print(json.dumps(body) if args.json else text)


def line_of(job: Job) -> str:
    """One job as one line: id, status, type, attempts, and its error if any."""
    line = f"{job.id}  {job.status:<9}  {job.type:<15}  attempt {job.attempts}/{job.max_attempts}"
    if job.error:
        line += f"  error: {' '.join(job.error.split())}"
    return line


def details_of(job: Job) -> str:
    rows = [
        ("id", job.id), ("tenant", job.tenant_id), ("type", job.type), ("status", job.status),
        ("attempts", f"{job.attempts} of {job.max_attempts}"), ("timeout", f"{job.timeout_ms} ms"),
        ("created", job.raw.get("createdAt")), ("updated", job.raw.get("updatedAt")),
        ("run at", job.raw.get("runAt")), ("error", job.error),
        ("payload", json.dumps(job.payload)), ("result", json.dumps(job.result)),
    ]
    return "\n".join(f"{name:>9}: {value}" for name, value in rows if value is not None)
