"""The `conveyor` command: `serve` runs a node, `migrate` applies the schema.

Signals: the first SIGINT/SIGTERM drains the node (exit 0), a second one cancels at once.
Invalid configuration prints one line naming the setting and exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import psycopg
import trio

from . import config as config_mod
from .node import run_node
from .stores import StoreUnavailable
from .stores.postgres import migrate_sync
from .supervision import SupervisorGaveUp

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
            await run_node(config, draining=draining)
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run a node: HTTP API, WebSocket feed and executors")
    serve_p.add_argument("--host", help="address to bind (default 127.0.0.1, or CONVEYOR_HOST)")
    serve_p.add_argument("--port", type=int, help="port to bind (default 3000, or CONVEYOR_PORT)")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    args = parser.parse_args(argv)

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
    try:
        if args.command == "migrate":
            applied = migrate_sync(config.database_url)
            print(f"applied migrations: {applied or 'none pending'}")
        else:
            trio.run(serve, config)
    except* (StoreUnavailable, psycopg.OperationalError) as group:
        unavailable = list(group.exceptions)
    except* SupervisorGaveUp as group:
        gave_up = list(group.exceptions)
    except* config_mod.ConfigError as group:
        bad_config = list(group.exceptions)
    if bad_config:
        print(f"conveyor: invalid configuration: {_one_line(bad_config[0])}", file=sys.stderr)
        return 2
    if unavailable:
        print(f"conveyor: PostgreSQL unavailable: {_one_line(unavailable[0])}", file=sys.stderr)
        return 1
    if gave_up:
        print(f"conveyor: node stopped: {_one_line(gave_up[0])}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
