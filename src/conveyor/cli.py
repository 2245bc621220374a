"""The `conveyor` command: `serve` runs a node, `migrate` applies the schema, `tenants` and
`keys` manage tenants and their API keys (JSON on stdout; a new key is shown once), `jobs` and
`stats` use a node's job API, `watch` tails a tenant's feed, `services` runs the embedded
servers alone, `redis rebuild` rebuilds the dispatch index from PostgreSQL.

Without DATABASE_URL or REDIS_URL, every command uses the embedded PostgreSQL and Valkey of
CONVEYOR_DATA_DIR (starting them, or joining those a running node owns).

Signals: the first SIGINT/SIGTERM drains the node (exit 0), a second one cancels at once.
Invalid configuration prints one line naming the setting and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import psycopg
import trio

from . import config as config_mod
from . import feed, jobs_cli, rebuild, schedules_cli, tenants, watch
from .embedded import DataDirError, EmbeddedError, embedded_services
from .handlers import build_registry
from .limits import FIELDS
from .node import CannotListen, run_node
from .process import tune_allocator
from .stores import PostgresStore, StoreUnavailable
from .stores.sqlfiles import migrate_sync
from .supervision import SupervisorGaveUp
from .validation import Invalid

log = logging.getLogger("conveyor")


async def serve(config: config_mod.Config) -> None:
    draining = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if not draining.is_set():
                        log.info("%s: draining (send it again to stop at once)", signal.Signals(signum).name)
                        draining.set()
                    else:
                        log.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            build_registry(config)  # a bad handler module is a configuration error: before anything starts
            # embedded servers (for an unset URL) start before the tree and stop after it
            async with embedded_services(config) as config:
                await run_node(config, draining=draining)
            nursery.cancel_scope.cancel()


async def services(config: config_mod.Config) -> None:
    """`conveyor services`: the embedded servers alone, until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with embedded_services(config) as config:
            print(json.dumps({"DATABASE_URL": config.database_url, "REDIS_URL": config.redis_url}), flush=True)
            async for _ in signals:
                break


async def migrate(config: config_mod.Config) -> list[int]:
    async with embedded_services(config, needs=("postgres",)) as config:
        return await trio.to_thread.run_sync(migrate_sync, config.database_url)


async def rebuild_redis(config: config_mod.Config, wipe: bool) -> object:
    async with embedded_services(config) as config:
        await trio.to_thread.run_sync(migrate_sync, config.database_url)
        return await rebuild.rebuild(config, wipe=wipe)


async def manage(config: config_mod.Config, args: argparse.Namespace) -> object:
    """One `tenants` or `keys` command against PostgreSQL; returns what to print."""
    async with embedded_services(config, needs=("postgres",)) as config:
        await trio.to_thread.run_sync(migrate_sync, config.database_url)
        return await _manage(config, args)


async def _manage(config: config_mod.Config, args: argparse.Namespace) -> object:
    pg = PostgresStore(config.database_url, pool_size=1, timeout=5)
    await pg.open()
    try:
        limits = {
            wire: getattr(args, column)
            for wire, (column, _, _) in FIELDS.items()
            if getattr(args, column, None) is not None
        }
        match (args.command, args.action):
            case ("tenants", "create"):
                return await tenants.create_tenant(pg, {"id": args.tenant, **limits}, config)
            case ("tenants", "set"):
                return await tenants.update_limits(pg, args.tenant, limits, config)
            case ("tenants", "list"):
                return await tenants.list_tenants(pg, config)
            case ("keys", "create"):
                return await tenants.create_key(pg, args.tenant, args.name)
            case ("keys", "list"):
                return await tenants.list_keys(pg, args.tenant)
            case ("keys", "revoke"):
                return await tenants.revoke_key(pg, args.tenant, args.key_id)
        raise AssertionError(f"unknown command {args.command} {args.action}")
    finally:
        await pg.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description=" ".join(__doc__.split("\n\n")[0].split()))
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run a node: HTTP API, WebSocket feed and executors")
    serve_p.add_argument("--host", help="address to bind (default 127.0.0.1, or CONVEYOR_HOST)")
    serve_p.add_argument("--port", type=int, help="port to bind (default 3000, or CONVEYOR_PORT)")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    sub.add_parser(
        "services",
        help="run the embedded PostgreSQL and Valkey of CONVEYOR_DATA_DIR in the foreground (prints their URLs)",
    )
    watch_p = sub.add_parser(
        "watch", help="tail a tenant's live feed, resuming across reconnects (key: CONVEYOR_API_KEY)"
    )
    watch_p.add_argument("--url", default="http://127.0.0.1:3000", help="a node, or nginx in front of the nodes")
    watch_p.add_argument("--tenant", help="the tenant (default: the API key's; required when auth is off)")
    watch_p.add_argument("--from", dest="after", help="start after this eventId (default: from now)")
    watch_p.add_argument("--json", action="store_true", help="print each event as one JSON line")

    redis_p = sub.add_parser("redis", help="the dispatch index in Redis")
    redis_actions = redis_p.add_subparsers(dest="action", required=True)
    rebuild_p = redis_actions.add_parser(
        "rebuild", help="dispatch again every unfinished job that Redis does not know (safe while nodes run)"
    )
    rebuild_p.add_argument(
        "--wipe", action="store_true",
        help="first delete every key under the prefix (to change CONVEYOR_REDIS_SHARDS; stop every node first)",
    )

    tenants_p = sub.add_parser("tenants", help="create, list and set limits of tenants")
    tenant_actions = tenants_p.add_subparsers(dest="action", required=True)
    for action, text in (("create", "create a tenant"), ("set", "change a tenant's limits")):
        action_p = tenant_actions.add_parser(action, help=text)
        action_p.add_argument("tenant", help="tenant id: letters, digits, '_', '.', '-'")
        for wire, (column, kind, _) in FIELDS.items():
            flag = "--" + column.replace("_", "-")
            action_p.add_argument(flag, dest=column, type=kind, help=f"{wire} override")
    tenant_actions.add_parser("list", help="list tenants with their effective limits")

    keys_p = sub.add_parser("keys", help="create, list and revoke API keys of a tenant")
    key_actions = keys_p.add_subparsers(dest="action", required=True)
    create_p = key_actions.add_parser("create", help="create a key (printed once, never stored)")
    create_p.add_argument("--name", default="", help="a label for the key")
    key_actions.add_parser("list", help="list a tenant's keys (never the keys themselves)")
    revoke_p = key_actions.add_parser("revoke", help="revoke a key: it stops working on every node")
    revoke_p.add_argument("key_id", help="the key's id (the part after cvk_)")
    for action_p in (create_p, key_actions.choices["list"], revoke_p):
        action_p.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    schedules_cli.add_parser(sub, jobs_cli.add_parsers(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; a reader that went away (`| head`) ends it quietly, as it does cat."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside: a closed pipe is found here, not at interpreter exit
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush
        return 1


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("jobs", "stats", "schedules"):  # clients of a node, like watch
        return jobs_cli.main(args, schedules_cli.run if args.command == "schedules" else None)
    if args.command == "watch":  # a client: needs no database or node settings
        if args.after is not None and not feed.resumable(args.after):
            print("conveyor: --from must be an eventId like 1732950000000-0", file=sys.stderr)
            return 2
        key = os.environ.get("CONVEYOR_API_KEY") or None
        return watch.main(args.url, args.tenant, args.after, args.json, key)

    logging.basicConfig(
        level=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_mod.from_env(
            os.environ,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
        )
        if config.port is not None and not 0 <= config.port <= 65535:
            raise config_mod.ConfigError(f"--port must be 0-65535, got {config.port}")
    except config_mod.ConfigError as exc:
        print(f"conveyor: invalid configuration: {exc}", file=sys.stderr)
        return 2

    unavailable: list[BaseException] = []
    gave_up: list[BaseException] = []
    bad_config: list[BaseException] = []
    refused: list[tuple[int, str]] = []
    embedded: list[BaseException] = []
    try:
        if args.command == "migrate":
            applied = trio.run(migrate, config)
            print(f"applied migrations: {applied or 'none pending'}")
        elif args.command == "services":
            trio.run(services, config)
        elif args.command == "redis":
            print(json.dumps(trio.run(rebuild_redis, config, args.wipe)))
        elif args.command in ("tenants", "keys"):
            print(json.dumps(trio.run(manage, config, args)))
        else:
            tune_allocator()
            trio.run(serve, config)
    except* (StoreUnavailable, psycopg.OperationalError) as group:
        unavailable = _leaves(group)
    except* DataDirError as group:
        bad_config = _leaves(group)
    except* EmbeddedError as group:
        embedded = _leaves(group)
    except* CannotListen as group:
        refused = [(1, _one_line(e)) for e in _leaves(group)]
    except* SupervisorGaveUp as group:
        gave_up = _leaves(group)
    except* config_mod.ConfigError as group:
        bad_config = _leaves(group)
    except* Invalid as group:
        refused = [(2, _invalid_line(e)) for e in _leaves(group)]
    except* (tenants.NotFound, tenants.Conflict) as group:
        refused = [(1, _one_line(e)) for e in _leaves(group)]
    if refused:
        print(f"conveyor: {refused[0][1]}", file=sys.stderr)
        return refused[0][0]
    if bad_config:
        print(f"conveyor: invalid configuration: {_one_line(bad_config[0])}", file=sys.stderr)
        return 2
    if embedded:
        print(f"conveyor: embedded services: {_one_line(embedded[0])}", file=sys.stderr)
        return 1
    if unavailable:
        line = _one_line(unavailable[0])
        named = line.startswith(("PostgreSQL unavailable", "Redis unavailable"))
        print(f"conveyor: {line}" if named else f"conveyor: PostgreSQL unavailable: {line}", file=sys.stderr)
        return 1
    if gave_up:
        print(f"conveyor: node stopped: {_one_line(gave_up[0])}", file=sys.stderr)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in a group, however deeply nurseries nested it."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def _invalid_line(exc: BaseException) -> str:
    assert isinstance(exc, Invalid)
    return f"{exc.message}: " + "; ".join(f"{d.field} {d.message}" for d in exc.details)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
