"""PostgreSQL store: named queries from sql/, migrations, and batched job writes.

Every call runs under a CapacityLimiter sized to the pool and carries a whole batch. psycopg has
no trio support: a call that finds a connection ready in the pool runs on the event loop, its
socket waits awaited by trio (pg_trio.py); one that would wait for a connection (the pool is
growing, or reconnecting after an outage) hops to a worker thread, where waiting blocks nobody.
It holds no job rules; callers decide what to write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import attrs
import psycopg
import psycopg_pool
import trio
from psycopg.rows import dict_row

from ..failures import DataRefused, StoreUnavailable
from ..model import NewJob
from . import pg_trio
from .pg_rows import finish_rows_json, job_rows_json
from .sqlfiles import QUERIES

log = logging.getLogger(__name__)
T = TypeVar("T")

LIMIT_COLUMNS = (
    "max_running", "submit_rate", "submit_burst", "max_queued", "max_websockets",
    "max_queued_bytes", "read_rate", "read_burst", "retention_seconds", "max_schedules",
)
LIST_VALUE_BYTES = 16 * 1024  # a list leaves out payloads and results larger than this
ROWS_PER_STEP = 20  # of a list page: converted between two turns of the event loop
EXACT_TOTAL_UP_TO = 10_000  # a list's total is counted up to this, and estimated beyond it


@attrs.frozen
class IdempotencyKey:
    """An Idempotency-Key of a submission, with what a replay of it must answer."""

    tenant: str
    key: str
    digest: str  # of the request, so that a different request under the same key is refused
    response: dict[str, Any]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresStore:
    def __init__(self, database_url: str, *, pool_size: int = 8, timeout: float = 1.5) -> None:
        self._pool = psycopg_pool.ConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout,
            # autocommit: a single statement is its own transaction, one round trip instead of
            # three (BEGIN, the statement, COMMIT); work of several statements asks for one
            kwargs={"connect_timeout": max(1, int(timeout)), "autocommit": True},
            check=pg_trio.check,
            connection_class=pg_trio.TrioConnection,
        )
        self._limiter = trio.CapacityLimiter(pool_size)
        # tenants' reads (GET /jobs and /jobs/{id}) may hold at most half the pool, so that the
        # writer and the recorder always find a connection however many readers wait
        self._reads = trio.CapacityLimiter(max(1, pool_size // 2))

    async def open(self) -> None:
        await trio.to_thread.run_sync(lambda: self._pool.open(wait=False))

    async def close(self) -> None:
        with trio.move_on_after(5, shield=True):
            await trio.to_thread.run_sync(self._pool.close, abandon_on_cancel=True)

    async def _run(self, fn: Callable[[psycopg.Connection[Any]], T], *, transaction: bool = True) -> T:
        """fn(connection), in a transaction unless it is a single statement (transaction=False)."""

        def work() -> T:
            try:
                with self._pool.connection() as conn:
                    if not transaction:
                        return fn(conn)
                    with conn.transaction():
                        return fn(conn)
            except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError) as exc:
                raise DataRefused(f"PostgreSQL refused the values: {_first_line(exc)}") from exc
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc

        async with self._limiter:
            if self._pool.get_stats().get("pool_available", 0) > 0:
                try:
                    return await pg_trio.run(work)
                except pg_trio.StaleInLoop:
                    pass  # the pool dropped that connection: take another, waiting in a thread
            return await trio.to_thread.run_sync(work)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute(QUERIES["ping"]).fetchone(), transaction=False)

    def connections(self) -> int:
        """Connections the pool holds open now (it grows under load up to its size)."""
        return int(self._pool.get_stats().get("pool_size", 0))

    async def insert_jobs(
        self,
        submissions: Sequence[tuple[IdempotencyKey | None, Sequence[NewJob]]],
        *,
        retain_s: float = 86_400,
    ) -> set[tuple[str, str]]:
        """Insert the jobs of a batch of submissions in one transaction.

        A submission with an idempotency key is inserted only if its key is taken in the same
        transaction (no live row holds it); returns the (tenant, key) pairs taken.
        """
        keyed = [key for key, _ in submissions if key is not None]

        def work(conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
            taken: set[tuple[str, str]] = set()
            if keyed:
                rows = conn.execute(
                    QUERIES["claim_idempotency_keys"],
                    {
                        "tenants": [k.tenant for k in keyed],
                        "keys": [k.key for k in keyed],
                        "digests": [k.digest for k in keyed],
                        "responses": [json.dumps(k.response) for k in keyed],
                        "retain_s": retain_s,
                    },
                ).fetchall()
                taken = {(tenant, key) for tenant, key in rows}
            jobs = [
                job
                for key, batch in submissions
                if key is None or (key.tenant, key.key) in taken
                for job in batch
            ]
            if jobs:
                conn.execute(QUERIES["insert_jobs"], {"rows": job_rows_json(jobs)})
            return taken

        # without keys, one INSERT: its own transaction
        return await self._run(work, transaction=bool(keyed))

    async def idempotent_response(
        self, tenant: str, key: str, *, retain_s: float
    ) -> dict[str, Any] | None:
        """The stored request digest and response of a live idempotency key, or None."""
        args = {"tenant": tenant, "key": key, "retain_s": retain_s}
        return await self._fetch_one("get_idempotency_key", args)

    async def purge_idempotency_keys(self, *, retain_s: float, limit: int) -> int:
        """Delete up to limit expired idempotency keys; returns how many."""
        return await self._count("purge_idempotency_keys", {"retain_s": retain_s, "limit": limit})

    async def prune_jobs(self, *, retain_s: int, own: Sequence[str], limit: int) -> int:
        """Delete up to limit jobs finished more than retain_s ago, of tenants not in `own`."""
        return await self._count("prune_jobs", {"retain_s": retain_s, "own": list(own), "limit": limit})

    async def prune_tenant_jobs(self, retentions: dict[str, int], *, limit: int) -> int:
        """Delete up to limit jobs of each of these tenants finished more than its retention
        (seconds) ago."""
        if not retentions:
            return 0
        args = {"tenants": list(retentions), "seconds": list(retentions.values()), "limit": limit}
        return await self._count("prune_tenant_jobs", args)

    async def jobs_dead_rows(self) -> tuple[int, int]:
        """(dead, live) rows of the jobs table by PostgreSQL's statistics."""
        row = await self._fetch_one("jobs_dead_rows", {})
        return (int(row["dead"]), int(row["live"])) if row else (0, 0)

    async def vacuum_jobs(self) -> None:
        """VACUUM (ANALYZE) the jobs table: it takes no lock that writes or reads wait for."""

        # VACUUM cannot run in a transaction: the pool's connections are autocommit
        await self._run(lambda conn: conn.execute(QUERIES["vacuum_jobs"]), transaction=False)

    async def _count(self, name: str, args: dict[str, Any]) -> int:
        """Run one named statement in its own transaction; the rows it touched."""
        return await self._run(lambda conn: conn.execute(QUERIES[name], args).rowcount, transaction=False)

    async def cancel_job(self, job_id: str, tenant: str | None) -> dict[str, Any] | None:
        return await self._fetch_one("cancel_job", {"id": job_id, "tenant": tenant})

    async def retry_job(self, job_id: str, tenant: str | None, budget: int) -> dict[str, Any] | None:
        return await self._fetch_one("retry_job", {"id": job_id, "tenant": tenant, "budget": budget})

    async def record(
        self, starts: Sequence[tuple[str, int]], finishes: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Write a batch of fenced transitions in one transaction.

        Returns the rows that the starts and the finishes changed; a row missing was fenced out.
        A finish's row is its id, status and event: the JOB_UPDATE of what it wrote, as JSON text.
        """

        def work(conn: psycopg.Connection[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            started: list[dict[str, Any]] = []
            finished: list[dict[str, Any]] = []
            # Planned per batch, not prepared: a prepared statement's generic plan is made once,
            # and one made while the table was small (a hash join over a sequential scan of jobs)
            # stayed while it grew, until an ANALYZE (tests/integration/test_pg_plans.py).
            with conn.cursor(row_factory=dict_row) as cur:
                if starts:
                    rows = json.dumps([{"id": job_id, "attempt": attempt} for job_id, attempt in starts])
                    cur.execute(QUERIES["record_started"], {"rows": rows}, prepare=False)
                    started = cur.fetchall()
                if finishes:
                    cur.execute(QUERIES["record_finished"], {"rows": finish_rows_json(finishes)}, prepare=False)
                    finished = cur.fetchall()
            return started, finished

        # both kinds: in one transaction, so that a refused outcome does not leave the starts
        # written (and fenced out when the recorder writes them again)
        return await self._run(work, transaction=bool(starts) and bool(finishes))

    async def run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """fn(connection) in a worker thread, in one transaction of a pooled connection: for the
        stores of other tables (stores/schedule_rows.py)."""
        return await self._run(fn)

    async def fetch(self, name: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of one named query, as dicts."""
        return await self._fetch(name, args)

    async def _fetch(self, name: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Run one named query; its rows as dicts."""

        def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(QUERIES[name], args)
                return cur.fetchall() if cur.description else []

        return await self._run(work, transaction=False)

    async def _fetch_one(self, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
        rows = await self._fetch(name, args)
        return rows[0] if rows else None

    async def unfinished_jobs(
        self, *, quiet_s: float, after: tuple[datetime, str], limit: int
    ) -> list[dict[str, Any]]:
        """The ids, tenants and updated_at of non-terminal jobs not updated for quiet_s seconds, after a
        (updated_at, id) cursor."""
        args = {"quiet_s": quiet_s, "after_ts": after[0], "after_id": after[1], "limit": limit}
        return await self._fetch("unfinished_jobs", args)

    async def job_states(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The status, attempts, error and updated_at of these jobs (what JOB_UPDATE says)."""
        return await self._fetch("job_states", {"ids": list(ids)}) if ids else []

    async def unfinished_jobs_by_id(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return await self._fetch("unfinished_jobs_by_id", {"ids": list(ids)}) if ids else []

    async def get_job(self, job_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """A job by id; with a tenant, only that tenant's (another's is as absent)."""
        async with self._reads:
            if tenant is None:
                return await self._fetch_one("get_job", {"id": job_id})
            return await self._fetch_one("get_job_of_tenant", {"id": job_id, "tenant": tenant})

    async def job_owner(self, job_id: str, tenant: str | None = None) -> str | None:
        """The tenant of a job (with a tenant: only if it is that tenant's), or None."""
        async with self._reads:
            row = await self._fetch_one("job_owner", {"id": job_id, "tenant": tenant})
        return str(row["tenant_id"]) if row else None

    async def list_jobs(
        self,
        tenant: str,
        status: str | None,
        limit: int,
        offset: int,
        job_type: str | None = None,
        *,
        after: tuple[datetime, str] | None = None,
        most_bytes: int = LIST_VALUE_BYTES,
        exact_up_to: int = EXACT_TOTAL_UP_TO,
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """A page of a tenant's jobs (newest first, from an offset or after a (created_at, id)
        cursor) and their total: exact up to exact_up_to, else the planner's estimate (False).
        Payloads and results over most_bytes of JSON are left out (payload_omitted,
        result_omitted)."""

        def work(conn: psycopg.Connection[Any]) -> tuple[list[dict[str, Any]], int, bool]:
            args = {
                "tenant": tenant, "status": status, "type": job_type, "limit": limit, "offset": offset,
                "most": most_bytes, "after_ts": after[0] if after else None,
                "after_id": after[1] if after else None, "bound": exact_up_to + 1,
                "window": offset + limit,
            }
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(QUERIES["list_jobs" if status is not None else "list_jobs_any_status"], args)
                rows: list[dict[str, Any]] = []
                while part := cur.fetchmany(ROWS_PER_STEP):  # converted a part at a time
                    if rows:
                        pg_trio.pause()
                    rows += part
                counted = cur.execute(QUERIES["count_jobs"], args).fetchone()
                total = counted["count"] if counted else 0
                if total <= exact_up_to:
                    return rows, total, True
                plan = cur.execute(QUERIES["estimate_jobs"], args).fetchone()
            estimate = int(plan["QUERY PLAN"][0]["Plan"]["Plan Rows"]) if plan else 0
            return rows, max(estimate, total), False

        async with self._reads:  # READ COMMITTED: a transaction would not make page and total agree
            return await self._run(work, transaction=False)

    # Tenants and keys: rare admin calls, and one lookup per key a node has not cached.

    async def create_tenant(self, tenant: str, limits: dict[str, Any]) -> dict[str, Any] | None:
        """The new tenant's row, or None when it exists already."""
        args = {"id": tenant, **{column: limits.get(column) for column in LIMIT_COLUMNS}}
        return await self._fetch_one("create_tenant", args)

    async def update_tenant_limits(self, tenant: str, limits: dict[str, Any]) -> dict[str, Any] | None:
        args: dict[str, Any] = {"id": tenant}
        for column in LIMIT_COLUMNS:
            args[column] = limits.get(column)
            args[f"set_{column}"] = column in limits
        return await self._fetch_one("update_tenant_limits", args)

    async def list_tenants(self) -> list[dict[str, Any]]:
        return await self._fetch("list_tenants", {})

    async def tenant_overrides(self) -> list[dict[str, Any]]:
        return await self._fetch("tenant_overrides", {})

    async def create_key(
        self, tenant: str, *, key_id: str, name: str, digest: str
    ) -> dict[str, Any] | None:
        """The new key's row (no secret in it), or None when the tenant does not exist."""
        args = {"id": key_id, "tenant": tenant, "name": name, "digest": digest}
        return await self._fetch_one("create_key", args)

    async def list_keys(self, tenant: str) -> list[dict[str, Any]]:
        return await self._fetch("list_keys", {"tenant": tenant})

    async def revoke_key(self, tenant: str, key_id: str) -> dict[str, Any] | None:
        return await self._fetch_one("revoke_key", {"tenant": tenant, "id": key_id})

    async def find_key(self, key_id: str) -> dict[str, Any] | None:
        return await self._fetch_one("find_key", {"id": key_id})

    async def revoked_keys(self, key_ids: Sequence[str]) -> set[str]:
        if not key_ids:
            return set()
        return {r["id"] for r in await self._fetch("revoked_keys", {"ids": list(key_ids)})}
