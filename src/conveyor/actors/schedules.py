"""The fire loop of recurring schedules: every node runs one, and each fire makes one job.

Each round fires the due schedules in one PostgreSQL transaction (stores.postgres
fire_schedules): rows locked FOR UPDATE SKIP LOCKED, so two nodes never fire the same schedule at
once, and the fire's job unique per (tenant, schedule, fire time), so a fire retried after a
crash makes nothing twice. Its jobs are then dispatched like any submission; if this node dies
between the commit and the dispatch, the reconciler dispatches them from PostgreSQL. Between
rounds it sleeps until the next fire of any schedule (at most max_sleep, so that schedules
written through other nodes are seen), or until this node writes a schedule (nudge).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import trio

from .. import faults
from ..config import Config
from ..failures import DataRefused, StoreUnavailable
from ..handlers import Registry
from ..metrics import Metrics
from ..model import Fire
from ..schedules import Timing, fire
from ..stores import RedisStore
from ..stores.schedule_rows import ScheduleRows
from ..validation import scheduled_job
from ..wire import created_events

log = logging.getLogger(__name__)

FIRE_LIMIT = 200  # schedules fired per transaction
BROKEN_RETRY = timedelta(hours=1)  # a schedule whose timing cannot be computed tries again then


class Nudge:
    """Wakes the fire loop early: a schedule was written on this node."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, at_most: float) -> None:
        with trio.move_on_after(at_most):
            await self._event.wait()
        self._event = trio.Event()


def planner(registry: Registry, config: Config) -> Callable[[list[dict[str, Any]], datetime], list[Fire]]:
    """What each due schedule row makes (pure; runs in the store's transaction)."""

    def plan(rows: list[dict[str, Any]], now: datetime) -> list[Fire]:
        fires = []
        for row in rows:
            tenant, name = row["tenant_id"], row["name"]
            try:
                timing = Timing(row["cron"], row["every_ms"], row["timezone"], row["anchor"])
                fired_for, next_fire_at = fire(timing, row["next_fire_at"], now)
            except Exception:  # a stored timing this node cannot compute: skip it, not the others
                log.exception("schedule %s of tenant %s: cannot compute its next fire", name, tenant)
                fires.append(Fire(tenant, name, row["next_fire_at"], now + BROKEN_RETRY, None))
                continue
            job = scheduled_job(tenant, name, row["job"], fired_for, registry, config)
            if job is None:
                log.warning("schedule %s of tenant %s: its job no longer validates; fire skipped", name, tenant)
            fires.append(Fire(tenant, name, fired_for, next_fire_at, job))
        faults.point("fire-in-transaction")
        return fires

    return plan


async def run_schedule_fires(
    rows: ScheduleRows,
    redis: RedisStore,
    plan: Callable[[list[dict[str, Any]], datetime], list[Fire]],
    metrics: Metrics,
    nudge: Nudge,
    *,
    max_sleep: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        try:
            made, due, now = await rows.fire_schedules(plan, limit=FIRE_LIMIT)
        except (StoreUnavailable, DataRefused) as exc:
            log.warning("schedules: %s", exc)
            await trio.sleep(max_sleep)
            continue
        if made:
            faults.point("fire-after-commit")
            metrics.inc("conveyor_schedule_jobs_total", len(made))
            try:
                await redis.enqueue(made, created_events(made))
            except StoreUnavailable as exc:
                # committed: the reconciler dispatches them from PostgreSQL once Redis answers
                log.warning("schedules: %d jobs made but not dispatched yet: %s", len(made), exc)
        wait = max_sleep if due is None else (due - now).total_seconds()
        # a due schedule another node holds is retried shortly, not in a busy loop
        await nudge.wait(min(max_sleep, max(wait, 0.02)))
