"""psycopg driven from trio's event loop, without a worker thread.

psycopg's blocking API is built on generators that yield when the connection's socket would
block; a blocking connection consumes them in `Connection.wait`. Here a call runs in a greenlet
of the event loop's thread: whenever psycopg would block, `TrioConnection.wait` hands the
socket back to the trio task that drives the greenlet, which awaits it with trio and resumes
the greenlet when it is ready. The same code (a function of a connection) runs either way; a
connection used outside a driven greenlet (in a worker thread, or by the pool's own threads,
which connect and reset connections) waits as psycopg does.

Nothing inside a driven call may block the thread: `run` only starts one with a connection that
the pool holds ready, so that taking it never waits (see PostgresStore._run).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, TypeVar

import greenlet
import psycopg
import psycopg_pool
import trio
from psycopg.abc import PQGen

T = TypeVar("T")

READY_R = 1  # psycopg's Wait.R and Ready.R (selectors.EVENT_READ)
READY_W = 2  # psycopg's Wait.W and Ready.W (selectors.EVENT_WRITE)
PAUSE = -1  # not a socket wait: a driven call lets the event loop run once (see pause)


class _Driven(greenlet.greenlet):
    """A greenlet whose psycopg waits are awaited by the trio task that switched into it."""


class TrioConnection(psycopg.Connection[Any]):
    """A connection whose waits go to trio when it is used inside `run`."""

    def wait(self, gen: PQGen[T], interval: float = 0.1, timeout: float | None = None) -> T:
        current = greenlet.getcurrent()
        if not isinstance(current, _Driven):
            return super().wait(gen, interval, timeout)
        fd = self.pgconn.socket
        try:
            wanted = next(gen)
            while True:
                wanted = gen.send(current.parent.switch((fd, wanted)))
        except StopIteration as done:
            return done.value


class StaleInLoop(BaseException):  # noqa: N818  (not an error: a signal to take the other path)
    """A pooled connection failed its check inside a driven call. A BaseException, so that the
    pool puts the connection back (closing it) and re-raises at once, instead of retrying after
    a blocking sleep that would stop the event loop; the caller retries in a worker thread."""


def pause() -> None:
    """Inside a driven call, let the event loop run other tasks once before going on: work on a
    large result (converting its rows) is then several steps of the loop, not one long one that
    every other request waits behind. Elsewhere (a worker thread) nothing to do."""
    current = greenlet.getcurrent()
    if isinstance(current, _Driven):
        current.parent.switch((PAUSE, PAUSE))


def check(conn: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection before it lends it. A connection on whose socket
    nothing arrived while it sat in the pool is lent as it is; one that the server wrote to (a
    backend terminated, a server shut down, a proxy cut: each sends its goodbye or closes) is
    checked with a round trip, and raises when it is broken (StaleInLoop inside a driven call)."""
    try:
        if not _has_input(conn.pgconn.socket):  # the socket of a closed connection raises
            return
        psycopg_pool.ConnectionPool.check_connection(conn)
    except Exception as exc:
        if isinstance(greenlet.getcurrent(), _Driven):
            raise StaleInLoop(str(exc)) from exc
        raise


def _has_input(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True  # closed or invalid: the round trip will say how


async def _ready(fd: int, wanted: int) -> int:
    """Wait until the socket is ready as psycopg asks (read, write or either); what is ready."""
    if wanted == READY_R:
        await trio.lowlevel.wait_readable(fd)
        return READY_R
    if wanted == READY_W:
        await trio.lowlevel.wait_writable(fd)
        return READY_W
    # either (psycopg flushing a large query while the server may answer): rare, so plain
    ready = 0
    async with trio.open_nursery() as nursery:

        async def on(wait: Callable[[int], Any], flag: int) -> None:
            nonlocal ready
            await wait(fd)
            ready |= flag
            nursery.cancel_scope.cancel()

        nursery.start_soon(on, trio.lowlevel.wait_readable, READY_R)
        nursery.start_soon(on, trio.lowlevel.wait_writable, READY_W)
    return ready


async def _paused() -> int:
    await trio.lowlevel.cancel_shielded_checkpoint()
    return 0


async def run(fn: Callable[[], T]) -> T:
    """fn() in a driven greenlet, its socket waits awaited here. Not cancellable, as a call in
    a worker thread is not: a statement sent is seen through to its answer."""
    child = _Driven(fn)
    with trio.CancelScope(shield=True):
        request = child.switch()
        while not child.dead:
            fd, wanted = request
            try:
                ready = await (_paused() if wanted == PAUSE else _ready(fd, wanted))
            except BaseException as exc:  # psycopg unwinds, and the pool takes its connection back
                request = child.throw(exc)
                continue
            request = child.switch(ready)
    return request
