"""Embedded PostgreSQL and Valkey for a node started without DATABASE_URL or REDIS_URL.

One data directory (CONVEYOR_DATA_DIR) holds both servers' data, their logs and
`embedded.json`: their ports, chosen once at the first start, so that every node and every
`conveyor` command on that directory finds the same servers. The process that holds the lock on
`embedded.lock` owns the servers: it starts them before its tree, restarts one that dies, and
stops them after its tree. Another node on the same directory joins: it uses the servers, and
when the owner is gone (its servers go with it) the first joiner to get the lock takes them over,
on the same ports. The lock is an flock, which the kernel drops with the process, so no stale
lock ever stops a start.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import platformdirs
import psycopg
import trio
from psycopg import sql

from ..config import Config
from . import servers
from .children import alive, signal_name, spawn, stop, wait_exit
from .servers import EmbeddedError, Server

log = logging.getLogger(__name__)

START_S = 60.0  # a first start includes initdb
TAKEOVER_POLL_S = 0.5
ALL = ("postgres", "valkey")
ROOT_USER = "conveyor"  # the system user PostgreSQL runs as when conveyor runs as root


class DataDirError(EmbeddedError):
    """The data directory cannot be created or written (a configuration error: exit 2)."""


def data_dir(config: Config) -> Path:
    """The data directory, created if needed and checked to be writable."""
    root = Path(config.data_dir or platformdirs.user_data_dir("conveyor")).expanduser().absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(
            f"cannot use the data directory {root} (CONVEYOR_DATA_DIR): {exc.strerror or exc}"
        ) from exc
    return root


@asynccontextmanager
async def embedded_services(config: Config, needs: tuple[str, ...] = ALL) -> AsyncIterator[Config]:
    """The config with the embedded servers' URLs filled in where a URL it needs is not set; the
    servers run (owned or joined) for as long as the block does."""
    unset = {"postgres": not config.database_url, "valkey": not config.redis_url}
    wanted = tuple(name for name in needs if unset[name])
    if not wanted:
        yield config
        return
    root = data_dir(config)
    async with trio.open_nursery() as nursery:
        urls: dict[str, str] = await nursery.start(keep, root, wanted)
        try:
            yield attrs.evolve(
                config,
                database_url=config.database_url or urls.get("postgres", ""),
                redis_url=config.redis_url or urls.get("valkey", ""),
            )
        finally:
            nursery.cancel_scope.cancel()


async def keep(root: Path, wanted: tuple[str, ...], *, task_status: trio.TaskStatus[dict[str, str]]) -> None:
    """Own the servers, or join them and take them over when their owner is gone."""
    with open(root / "embedded.lock", "a+b") as lock:  # noqa: ASYNC230  (a local file, once)
        announce: Callable[[dict[str, str]], None] | None = task_status.started
        while True:
            if locked(lock):
                await own(root, wanted, announce)  # runs until cancelled
            found = [make_server(root, name, await recorded_ports(root)) for name in ALL]
            if announce is not None:
                if not await joined(root, found, lock):
                    continue  # the owner went away meanwhile, and the lock is ours
                for server in found:
                    if server.key in wanted:
                        log.info("embedded %s: joined the one of %s (process %s owns it); %s",
                                 server.name, root, owner_pid(lock), server.shell_hint)
                announce({server.key: server.url for server in found if server.key in wanted})
                announce = None
            while not locked(lock):  # noqa: ASYNC110  (another process's lock: no event to wait on)
                await trio.sleep(TAKEOVER_POLL_S)
            log.warning("the process that owned the embedded servers of %s is gone: taking them over", root)


async def joined(root: Path, found: list[Server], lock: Any) -> bool:
    """Wait until the owner's servers answer: True, or False if the lock came free meanwhile."""
    with trio.move_on_after(START_S):
        for server in found:
            # the owner's database, not just its server: the owner makes it after its server answers
            while not await answers(server, database=servers.DATABASE):
                if locked(lock):
                    return False
                await trio.sleep(0.1)
        return True
    raise EmbeddedError(
        f"the embedded servers of {root} are owned by process {owner_pid(lock)} but do not answer: "
        f"{servers.log_tail(found[0].log_path)}"
    )


def locked(lock: Any) -> bool:
    """Take the owner's lock if it is free (again, if it is ours already), noting our pid in it."""
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()).encode())
    lock.flush()
    return True


def owner_pid(lock: Any) -> str:
    lock.seek(0)
    return lock.read().decode(errors="replace").strip() or "?"


async def own(root: Path, wanted: tuple[str, ...], announce: Callable[[dict[str, str]], None] | None) -> None:
    """Start both servers (whichever this process wants: another may want the other), watch them,
    and stop them when cancelled."""
    ports = owned_ports(root)
    user = await trio.to_thread.run_sync(prepare_root_user, root)
    await trio.to_thread.run_sync(servers.init_postgres, root, user)
    servers.init_valkey(root)
    found = [make_server(root, name, ports, user) for name in ALL]
    async with trio.open_nursery() as nursery:
        for server in found:
            pid = await nursery.start(supervise, server)
            binary = Path(server.argv[0])
            what = f"data in {root / 'postgres'}" if server.key == "postgres" else (
                "no persistence (PostgreSQL is the truth; the reconciler rebuilds it)")
            log.info("embedded %s %s (pid %d): %s, log %s; %s", server.name, servers.version(binary), pid,
                     what, server.log_path, server.shell_hint)
        await trio.to_thread.run_sync(ensure_database, found[0].url)
        if announce is not None:
            announce({server.key: server.url for server in found if server.key in wanted})
        await trio.sleep_forever()


def make_server(root: Path, name: str, ports: dict[str, int], user: str | None = None) -> Server:
    if name == "postgres":
        return servers.postgres(root, ports["postgres"], user)
    return servers.valkey(root, ports["valkey"])


def owned_ports(root: Path) -> dict[str, int]:
    """The servers' ports from embedded.json, chosen (free ones) and written on the first start."""
    path = root / "embedded.json"
    try:
        ports = read_ports(path)
    except FileNotFoundError:
        ports = {"postgres": servers.free_port(), "valkey": servers.free_port()}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(ports) + "\n")
        temporary.replace(path)
    return ports


def read_ports(path: Path) -> dict[str, int]:
    try:
        ports = json.loads(path.read_text())
        if not all(isinstance(ports.get(k), int) and 0 < ports[k] < 65536 for k in ("postgres", "valkey")):
            raise ValueError("want {\"postgres\": port, \"valkey\": port}")
    except (ValueError, AttributeError) as exc:
        raise EmbeddedError(f"{path} is not valid ({exc}): delete it to choose new ports") from None
    return {"postgres": ports["postgres"], "valkey": ports["valkey"]}


async def recorded_ports(root: Path) -> dict[str, int]:
    """The ports, waiting for an owner that is starting for the first time to write them."""
    with trio.move_on_after(START_S):
        while True:
            try:
                return read_ports(root / "embedded.json")
            except FileNotFoundError:
                await trio.sleep(0.1)
    raise EmbeddedError(f"the process that owns the embedded servers of {root} wrote no ports in {START_S:.0f} s")


async def supervise(server: Server, *, task_status: trio.TaskStatus[int]) -> None:
    """Run one server: start it, report its pid once it answers, restart it when it dies."""
    started = False
    delay = 0.5
    while True:
        await make_room(server, strict=not started)
        proc = spawn(server)
        try:
            if await ready(server, proc):
                if started:
                    log.warning("embedded %s is back (pid %d)", server.name, proc.pid)
                else:
                    task_status.started(proc.pid)
                    started = True
                delay = 0.5
                status = await wait_exit(proc)
                log.error("embedded %s (pid %d) exited with %s: %s; restarting it", server.name, proc.pid,
                          signal_name(status), servers.log_tail(server.log_path))
            elif not started:
                raise EmbeddedError(
                    f"the embedded {server.name} did not start: {servers.log_tail(server.log_path)} "
                    f"(log: {server.log_path})"
                )
            else:
                log.error("embedded %s did not come back: %s; trying again in %.1f s", server.name,
                          servers.log_tail(server.log_path), delay)
        finally:
            await stop(proc, server)
        await trio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def make_room(server: Server, *, strict: bool) -> None:
    """Wait for an earlier server of this data directory to be gone (the one of an owner that was
    just killed shuts down on its own), and refuse a port that another program holds."""
    command = Path(server.argv[0]).name
    with trio.move_on_after(START_S):
        while (pid := servers.live_pid(server.pid_path, command)) is not None and alive(pid):  # noqa: ASYNC110
            await trio.sleep(0.1)  # another process's exit: polled
    if (pid := servers.live_pid(server.pid_path, command)) is not None and alive(pid):
        raise EmbeddedError(f"an earlier embedded {server.name} of this data directory (pid {pid}) is still running")
    if servers.port_in_use(server.port):
        message = (
            f"port {server.port} of the embedded {server.name} is in use by another program: stop it, "
            f"or delete {server.log_path.parent / 'embedded.json'} to choose new ports"
        )
        if strict:
            raise EmbeddedError(message)
        log.error("%s", message)


async def ready(server: Server, proc: subprocess.Popen[bytes]) -> bool:
    """Whether the server answers within START_S (False as soon as it exits)."""
    with trio.move_on_after(START_S):
        while proc.poll() is None:
            if await answers(server):
                return True
            await trio.sleep(0.05)
    return False


async def answers(server: Server, database: str = "postgres") -> bool:
    if server.key == "postgres":
        return await trio.to_thread.run_sync(pg_answers, server.port, database)
    try:
        with trio.fail_after(1):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"PING\r\n")
                return (await stream.receive_some(64)).startswith(b"+PONG")
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return False


def pg_answers(port: int, database: str) -> bool:
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=database, connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


def ensure_database(url: str) -> None:
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (servers.DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(servers.DATABASE)))


def prepare_root_user(root: Path) -> str | None:
    """PostgreSQL refuses to run as root. As root, it runs as the system user `conveyor` (made
    with useradd if missing), and the directories above its data and binaries get o+x (traverse,
    not list) so that user can reach them."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(ROOT_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", ROOT_USER],
                check=True, capture_output=True, text=True, timeout=30,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise EmbeddedError(
                f"running as root, the embedded PostgreSQL needs a system user {ROOT_USER!r}, and useradd "
                f"failed: {servers.last_line(detail)}; create it, or run as another user"
            ) from exc
    for path in (root / "postgres", servers.postgres_bin().parent / "lib"):
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
    return ROOT_USER
