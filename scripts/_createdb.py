"""Create DATABASE_URL's database if it does not exist (used by scripts/serve and scripts/stack)."""

import os

import psycopg
from psycopg import sql

url = os.environ["DATABASE_URL"]
name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
with psycopg.connect(admin, autocommit=True) as conn:
    if name and not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")
