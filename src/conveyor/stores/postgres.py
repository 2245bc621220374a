"""PostgreSQL store: named queries from sql/, migrations, and batched job writes.

Every call hops to a worker thread once (psycopg has no trio support) under a CapacityLimiter
sized to the pool, and carries a whole batch. It holds no job rules; callers decide what to write.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

import attrs
import psycopg
import psycopg_pool
import trio
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..failures import DataRefused, StoreUnavailable
from ..model import NewJob

log = logging.getLogger(__name__)
T = TypeVar("T")

LIMIT_COLUMNS = (
    "max_running", "submit_rate", "submit_burst", "max_queued", "max_websockets",
    "max_queued_bytes", "read_rate", "read_burst", "retention_seconds", "max_schedules",
)
LIST_VALUE_BYTES = 16 * 1024  # a list leaves out payloads and results larger than this
MIGRATION_LOCK = 0x636F6E76  # "conv": advisory lock key serialising migrations across nodes


@attrs.frozen
class IdempotencyKey:
    """An Idempotency-Key of a submission, with what a replay of it must answer."""

    tenant: str
    key: str
    digest: str  # of the request, so that a different request under the same key is refused
    response: dict[str, Any]


def _job_params(jobs: Sequence[NewJob]) -> dict[str, list[Any]]:
    return {
        "ids": [j.id for j in jobs],
        "tenants": [j.tenant_id for j in jobs],
        "types": [j.type for j in jobs],
        "payloads": [j.payload_json for j in jobs],
        "payload_bytes": [len(j.payload_json) for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "timeouts": [j.timeout_ms for j in jobs],
        "priorities": [j.priority for j in jobs],
        "run_ats": [j.run_at for j in jobs],
        "delays": [j.delay_ms for j in jobs],
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_queries() -> dict[str, str]:
    text = resources.files(__package__).joinpath("sql/queries.sql").read_text()
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.startswith("--")]
        queries[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return queries


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files(__package__).joinpath("sql/migrations")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text()))
    return sorted(found)


QUERIES = _load_queries()


def migrate_sync(database_url: str) -> list[int]:
    """Apply pending migrations under an advisory lock; returns the versions applied."""
    applied = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS conveyor_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM conveyor_migrations")}
            for version, name, sql in _migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute(
                        "INSERT INTO conveyor_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
                log.info("applied migration %04d_%s", version, name)
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


class PostgresStore:
    def __init__(self, database_url: str, *, pool_size: int = 8, timeout: float = 1.5) -> None:
        self._pool = psycopg_pool.ConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout,
            kwargs={"connect_timeout": max(1, int(timeout))},
            check=psycopg_pool.ConnectionPool.check_connection,
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

    async def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        def work() -> T:
            try:
                with self._pool.connection() as conn:
                    return fn(conn)
            except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError) as exc:
                raise DataRefused(f"PostgreSQL refused the values: {_first_line(exc)}") from exc
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc

        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute(QUERIES["ping"]).fetchone())

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
            with conn.transaction():
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
                    conn.execute(QUERIES["insert_jobs"], _job_params(jobs))
            return taken

        return await self._run(work)

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

    async def _count(self, name: str, args: dict[str, Any]) -> int:
        """Run one named statement in its own transaction; the rows it touched."""
        return await self._run(lambda conn: conn.execute(QUERIES[name], args).rowcount)

    async def cancel_job(self, job_id: str, tenant: str | None) -> dict[str, Any] | None:
        return await self._fetch_one("cancel_job", {"id": job_id, "tenant": tenant})

    async def retry_job(self, job_id: str, tenant: str | None, budget: int) -> dict[str, Any] | None:
        return await self._fetch_one("retry_job", {"id": job_id, "tenant": tenant, "budget": budget})

    async def record(
        self, starts: Sequence[tuple[str, int]], finishes: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Write a batch of fenced transitions in one transaction.

        Returns the rows that the starts and the finishes changed; a row missing was fenced out.
        """

        def work(conn: psycopg.Connection[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            started: list[dict[str, Any]] = []
            finished: list[dict[str, Any]] = []
            with conn.cursor(row_factory=dict_row) as cur:
                if starts:
                    cur.execute(
                        QUERIES["record_started"],
                        {"ids": [s[0] for s in starts], "attempts": [s[1] for s in starts]},
                    )
                    started = cur.fetchall()
                if finishes:
                    cur.execute(
                        QUERIES["record_finished"],
                        {
                            "ids": [f["id"] for f in finishes],
                            "attempts": [f["attempt"] for f in finishes],
                            "new_attempts": [f["new_attempt"] for f in finishes],
                            "statuses": [f["status"] for f in finishes],
                            "errors": [f["error"] for f in finishes],
                            "results": [
                                None if f["result"] is None else Jsonb(f["result"]) for f in finishes
                            ],
                            "delays": [f["delay_ms"] for f in finishes],
                        },
                    )
                    finished = cur.fetchall()
            return started, finished

        return await self._run(work)

    async def _fetch(self, name: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Run one named query; its rows as dicts."""

        def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(QUERIES[name], args)
                return cur.fetchall() if cur.description else []

        return await self._run(work)

    async def _fetch_one(self, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
        rows = await self._fetch(name, args)
        return rows[0] if rows else None

    async def unfinished_jobs(
        self, *, quiet_s: float, after: tuple[datetime, str], limit: int
    ) -> list[dict[str, Any]]:
        """Non-terminal jobs not updated for quiet_s seconds, after a (updated_at, id) cursor."""
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

    async def list_jobs(
        self,
        tenant: str,
        status: str | None,
        limit: int,
        offset: int,
        job_type: str | None = None,
        *,
        most_bytes: int = LIST_VALUE_BYTES,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of a tenant's jobs and their total; payloads and results over most_bytes of
        JSON are left out (payload_omitted, result_omitted)."""

        def work(conn: psycopg.Connection[Any]) -> tuple[list[dict[str, Any]], int]:
            args = {
                "tenant": tenant, "status": status, "type": job_type, "limit": limit, "offset": offset,
                "most": most_bytes,
            }
            with conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(QUERIES["list_jobs"], args).fetchall()
                counted = cur.execute(QUERIES["count_jobs"], args).fetchone()
            return rows, counted["count"] if counted else 0

        async with self._reads:
            return await self._run(work)

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
