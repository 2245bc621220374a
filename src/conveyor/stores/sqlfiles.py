"""The SQL of the PostgreSQL store: named queries from sql/queries.sql, loaded once, and the
migrations in sql/migrations, applied in order under an advisory lock."""

from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x636F6E76  # "conv": advisory lock key serialising migrations across nodes


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
