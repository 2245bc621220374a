"""`conveyor schedules …`: a tenant's recurring schedules from the command line, on
conveyor.client, with the conventions of `conveyor jobs` (jobs_cli.py): CONVEYOR_URL and
CONVEYOR_API_KEY, text or --json, one-line errors, exit 1 for a refusal and 2 for a wrong
command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .client import Client, Schedule
from .jobs_cli import UsageError, payload_of, show


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    schedules_p = sub.add_parser("schedules", help="create, list, pause, resume and delete recurring schedules")
    actions = schedules_p.add_subparsers(dest="action", required=True)
    put_p = actions.add_parser("put", parents=[common], help="create or replace a schedule")
    put_p.add_argument("name", help="the schedule's name (letters, digits, '_.-')")
    timing = put_p.add_mutually_exclusive_group(required=True)
    timing.add_argument("--cron", help='five fields, like "0 9 * * 1-5"')
    timing.add_argument("--every", help="a duration, like 30s, 5m or 1h30m (at least 1s)")
    put_p.add_argument("--timezone", help="IANA name for --cron, like Europe/Paris (default UTC)")
    put_p.add_argument("--type", required=True, help="the job type each fire makes")
    put_p.add_argument("--payload", default="{}", help="its payload, a JSON object (default {})")
    put_p.add_argument("--max-attempts", type=int, help="attempts of each job (default: the node's)")
    put_p.add_argument("--timeout-ms", type=int, help="each attempt's deadline (default: the type's)")
    put_p.add_argument("--priority", type=int, help="0 (most urgent) to 9 (default 5)")
    put_p.add_argument("--paused", action="store_true", help="create it paused")
    actions.add_parser("list", parents=[common], help="the tenant's schedules")
    for action, text in (("get", "a schedule"), ("delete", "delete a schedule: no fire after this"),
                         ("pause", "pause a schedule"), ("resume", "resume from the next fire after now")):
        actions.add_parser(action, parents=[common], help=text).add_argument("name")


def run(client: Client, args: argparse.Namespace) -> int:
    match args.action:
        case "put":
            schedule = client.put_schedule(
                args.name, args.type, payload_of(args.payload), cron=args.cron, every=args.every,
                timezone=args.timezone, paused=args.paused, max_attempts=args.max_attempts,
                timeout_ms=args.timeout_ms, priority=args.priority,
            )
            show(args, schedule.raw, line_of(schedule))
        case "list":
            for schedule in client.list_schedules():
                print(json.dumps(schedule.raw) if args.json else line_of(schedule))
        case "get":
            schedule = client.get_schedule(args.name)
            show(args, schedule.raw, details_of(schedule))
        case "delete":
            client.delete_schedule(args.name)
            show(args, {"deleted": args.name}, f"deleted {args.name}")
        case "pause":
            schedule = client.pause_schedule(args.name)
            show(args, schedule.raw, line_of(schedule))
        case "resume":
            schedule = client.resume_schedule(args.name)
            show(args, schedule.raw, line_of(schedule))
        case _:
            raise UsageError(f"unknown action {args.action}")
    return 0


def line_of(schedule: Schedule) -> str:
    when = f"cron {schedule.cron!r} {schedule.timezone}" if schedule.cron else f"every {schedule.every}"
    state = "paused" if schedule.paused else f"next {schedule.raw.get('nextFireAt')}"
    return f"{schedule.name}  {when}  {schedule.job.get('type')}  {state}  last job {schedule.last_job_id or '-'}"


def details_of(schedule: Schedule) -> str:
    raw = schedule.raw
    rows = [
        ("name", schedule.name), ("tenant", schedule.tenant_id), ("cron", schedule.cron), ("every", schedule.every),
        ("timezone", schedule.timezone), ("job", json.dumps(schedule.job)), ("paused", str(schedule.paused).lower()),
        ("next fire", raw.get("nextFireAt")), ("last fire", raw.get("lastFireAt")), ("last job", schedule.last_job_id),
        ("created", raw.get("createdAt")), ("updated", raw.get("updatedAt")),
    ]
    return "\n".join(f"{name:>9}: {value}" for name, value in rows if value is not None)
