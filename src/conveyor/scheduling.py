"""Schedule operations: the one implementation of create-or-replace, get, list, delete, pause
and resume, which the HTTP API calls. A tenant sees and touches only its own schedules.

Outcomes that are answers are exceptions the web layer maps to a status: ScheduleNotFound (404),
TooManySchedules (409).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from .actors.schedules import Nudge
from .limits import TenantLimits
from .schedules import Timing
from .stores.schedule_rows import ScheduleRows
from .validation import ScheduleDef

LISTED_MOST = 1000  # a tenant's schedules in one answer (its cap is 100 by default)


class ScheduleNotFound(Exception):
    """No such schedule of this tenant (another tenant's is answered the same)."""


class TooManySchedules(Exception):
    """The tenant has as many schedules as its maxSchedules allows."""


@attrs.define
class Schedules:
    rows: ScheduleRows
    limits_of: Callable[[str], TenantLimits]
    nudge: Nudge

    async def put(self, new: ScheduleDef) -> tuple[dict[str, Any], bool]:
        """Create or replace a schedule; its row, and whether it was created. A schedule runs
        from now: its first fire is the first after now (an `every` one, now + every)."""
        now = datetime.now(UTC)
        timing = attrs.evolve(new.timing, anchor=now)
        cap = self.limits_of(new.tenant).max_schedules
        row = await self.rows.put_schedule({
            "tenant": new.tenant, "name": new.name, "cron": timing.cron, "every_ms": timing.every_ms,
            "timezone": timing.timezone, "anchor": now, "job": new.job, "paused": new.paused,
            "next_fire_at": timing.next_after(now),
        }, cap=cap)
        if row is None:
            raise TooManySchedules(f"tenant {new.tenant} has {cap} schedules, as many as its maxSchedules allows")
        self.nudge.set()
        return row, bool(row.pop("created"))

    async def get(self, tenant: str, name: str) -> dict[str, Any]:
        row = await self.rows.get_schedule(tenant, name)
        if row is None:
            raise ScheduleNotFound("Schedule not found")
        return row

    async def list(self, tenant: str) -> list[dict[str, Any]]:
        return await self.rows.list_schedules(tenant, LISTED_MOST)

    async def delete(self, tenant: str, name: str) -> None:
        """No fire after this returns: a fire in flight holds the row, and the delete waits."""
        if not await self.rows.delete_schedule(tenant, name):
            raise ScheduleNotFound("Schedule not found")

    async def pause(self, tenant: str, name: str) -> dict[str, Any]:
        row = await self.rows.set_schedule_paused(tenant, name, True, None)
        if row is None:
            raise ScheduleNotFound("Schedule not found")
        return row

    async def resume(self, tenant: str, name: str) -> dict[str, Any]:
        """Resume from the next fire after now: fires missed while paused are not made."""
        row = await self.get(tenant, name)
        timing = Timing(row["cron"], row["every_ms"], row["timezone"], row["anchor"])
        resumed = await self.rows.set_schedule_paused(tenant, name, False, timing.next_after(datetime.now(UTC)))
        if resumed is None:
            raise ScheduleNotFound("Schedule not found")
        self.nudge.set()
        return resumed
