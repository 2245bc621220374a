"""Create DATABASE_URL's database if it does not exist (used by scripts/serve and scripts/stack).
A server that cannot be reached is one line on stderr and exit 1, not a traceback."""

import os
import sys

import psycopg
from psycopg import sql

url = os.environ["DATABASE_URL"]
try:
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if name and not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")
except psycopg.Error as exc:
    print(f"conveyor: PostgreSQL unavailable at DATABASE_URL: {' '.join(str(exc).split())}", file=sys.stderr)
    sys.exit(1)
