"""Server processes as children of the node that cannot outlive it.

Each server is forked from the node's main thread with the parent-death signal set (Linux
prctl PR_SET_PDEATHSIG), so a node killed with -9 takes its servers down with it: PostgreSQL gets
SIGINT (a fast shutdown, its data safe) and Valkey SIGTERM. The signal is tied to the thread that
forked, which is why this does not use trio.run_process (it forks from a worker thread, and those
come and go). Each child gets a session of its own, so a Ctrl+C at the terminal reaches only the
node, which drains first and stops its servers after its tree.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from pathlib import Path

import trio

from .servers import Server, as_user

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 15.0

_libc = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the child between fork and exec


def spawn(server: Server) -> subprocess.Popen[bytes]:
    """Start the server with its output appended to its log; returns at once."""
    parent = os.getpid()
    death = server.stop_signal

    def in_child() -> None:  # after fork, before exec: nothing here may take a lock
        _libc.prctl(PR_SET_PDEATHSIG, death)
        if os.getppid() != parent:  # the node died before the line above
            os._exit(1)

    server.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(server.log_path, "ab") as log:
        return subprocess.Popen(
            server.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=in_child, start_new_session=True, close_fds=True, **as_user(server.user),
        )


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait, without a thread, until the child exits; its exit status."""
    if proc.poll() is not None:
        return proc.returncode
    fd = os.pidfd_open(proc.pid)
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
    return proc.wait()


async def stop(proc: subprocess.Popen[bytes], server: Server) -> None:
    """Stop the server with its own signal, then SIGKILL after STOP_GRACE_S. Shielded: this runs
    while the node is being cancelled, and must not leave a server behind."""
    with trio.CancelScope(shield=True):
        if proc.poll() is None:
            proc.send_signal(server.stop_signal)
            with trio.move_on_after(STOP_GRACE_S):
                await wait_exit(proc)
            if proc.poll() is None:
                proc.kill()
                await wait_exit(proc)


def signal_name(status: int) -> str:
    return f"signal {signal.Signals(-status).name}" if status < 0 else f"status {status}"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
