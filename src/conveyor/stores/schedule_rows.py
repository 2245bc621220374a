"""PostgreSQL store of the schedules table: a tenant's few schedules, written by hand, and their
fires, which every node runs (each fire once). It shares PostgresStore's pool and thread hop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..model import Fire, NewJob
from .pg_rows import job_params
from .postgres import PostgresStore
from .sqlfiles import QUERIES


class ScheduleRows:
    def __init__(self, pg: PostgresStore) -> None:
        self.pg = pg

    async def _one(self, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
        rows = await self.pg.fetch(name, args)
        return rows[0] if rows else None

    async def put_schedule(self, row: dict[str, Any], *, cap: int) -> dict[str, Any] | None:
        """Create or replace a schedule (the row's columns); None when it is new and its tenant
        has `cap` schedules already (0: no cap). The row returned says whether it was created."""

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            args = {**row, "job": Jsonb(row["job"])}
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                cur.execute(QUERIES["lock_tenant_schedules"], args)
                if cap > 0:
                    counted = cur.execute(QUERIES["count_other_schedules"], args).fetchone()
                    exists = cur.execute(QUERIES["get_schedule"], args).fetchone()
                    if exists is None and counted is not None and counted["count"] >= cap:
                        return None
                return cur.execute(QUERIES["upsert_schedule"], args).fetchone()

        return await self.pg.run(work)

    async def get_schedule(self, tenant: str, name: str) -> dict[str, Any] | None:
        return await self._one("get_schedule", {"tenant": tenant, "name": name})

    async def list_schedules(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        return await self.pg.fetch("list_schedules", {"tenant": tenant, "limit": limit})

    async def delete_schedule(self, tenant: str, name: str) -> bool:
        return await self._one("delete_schedule", {"tenant": tenant, "name": name}) is not None

    async def set_schedule_paused(
        self, tenant: str, name: str, paused: bool, next_fire_at: datetime | None
    ) -> dict[str, Any] | None:
        args = {"tenant": tenant, "name": name, "paused": paused, "next_fire_at": next_fire_at}
        return await self._one("set_schedule_paused", args)

    async def fire_schedules(
        self, plan: Callable[[list[dict[str, Any]], datetime], list[Fire]], *, limit: int
    ) -> tuple[list[NewJob], datetime | None, datetime]:
        """Fire up to limit due schedules in one transaction: `plan` (the caller's rules) says
        what each due row makes, the jobs are inserted (a fire's job at most once) and the
        schedules move to their next fire. Returns the jobs inserted, for dispatch, the next
        fire time of any schedule (None: none) and PostgreSQL's now."""

        def work(conn: psycopg.Connection[Any]) -> tuple[list[NewJob], datetime | None, datetime]:
            made: list[NewJob] = []
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(QUERIES["due_schedules"], {"limit": limit}).fetchall()
                if rows:
                    fires = plan(rows, rows[0]["now"])
                    jobs = [f.job for f in fires if f.job is not None]
                    inserted: set[str] = set()
                    if jobs:
                        params = {
                            **job_params(jobs),
                            "schedule_names": [j.schedule_name for j in jobs],
                            "scheduled_fors": [j.scheduled_for for j in jobs],
                        }
                        inserted = {r["id"] for r in cur.execute(QUERIES["insert_scheduled_jobs"], params).fetchall()}
                    made = [j for j in jobs if j.id in inserted]
                    job_of = {(j.tenant_id, j.schedule_name): j.id for j in made}
                    cur.execute(QUERIES["schedules_fired"], {
                        "tenants": [f.tenant_id for f in fires], "names": [f.name for f in fires],
                        "next": [f.next_fire_at for f in fires], "fired": [f.fired_for for f in fires],
                        "jobs": [job_of.get((f.tenant_id, f.name)) for f in fires],
                    })
                nxt = cur.execute(QUERIES["next_schedule_due"]).fetchone()
            assert nxt is not None
            return made, nxt["due"], nxt["now"]

        return await self.pg.run(work)
