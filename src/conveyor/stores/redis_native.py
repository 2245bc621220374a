"""Redis spoken from trio itself, for the calls every job makes on a single Redis: Lua scripts
(enqueue, claim, finish, ...), the idle fetcher's BLPOP and the broadcaster's XREAD. Commands go
out packed by hiredis over a trio socket and replies come back parsed by hiredis: no thread hop.

redis-py has no trio support, so the rest of the store calls it in worker threads, and a hop
costs as much as the call: an EVALSHA took 170 µs of CPU and 198 µs through a thread, 69 µs and
92 µs here (measured on the 2-core machine). Cluster mode, TLS and everything off the hot path
stay on redis-py. Errors look like the thread path's: a reply error raises redis.ResponseError,
a connection that fails or answers too slowly raises StoreUnavailable and is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis
import trio
from redis.connection import parse_url

from ..failures import StoreUnavailable

CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 10.0  # as the redis-py client's socket timeout; a blocking command adds its own
IDLE_CHECK_S = 15.0  # a connection idle this long is pinged before use (redis-py's health check)
_LOST = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, hiredis.ProtocolError)


def supports(url: str) -> bool:
    """Whether this client can speak to the server REDIS_URL names (plain TCP, no TLS)."""
    return urlsplit(url).scheme == "redis"


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = hiredis.Reader(encoding="utf-8")
        self.used = trio.current_time()

    async def request(self, args: Sequence[Any]) -> Any:
        """Send one command and read its reply (a reply error is returned, not raised)."""
        await self.stream.send_all(hiredis.pack_command(tuple(args)))
        while (reply := self.reader.gets()) is False:
            data = await self.stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("Redis closed the connection")
            self.reader.feed(data)
        self.used = trio.current_time()
        return reply

    def close(self) -> None:
        self.stream.socket.close()  # synchronous: safe in cleanup, even when cancelled


# replies that say the server cannot serve now, not that the command was wrong: redis-py raises
# its ConnectionError family for them, and the store calls that StoreUnavailable
_OUTAGE_REPLIES = ("LOADING", "MASTERDOWN", "NOAUTH", "WRONGPASS", "CLUSTERDOWN", "TRYAGAIN")


def _raise_error(reply: Any) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        if str(reply).startswith(_OUTAGE_REPLIES):
            raise StoreUnavailable(f"Redis unavailable: {reply}")
        raise redis.ResponseError(str(reply))
    return reply


class NativeRedis:
    """A bounded pool of connections to one Redis server."""

    def __init__(self, url: str, *, pool_size: int) -> None:
        settings = parse_url(url)
        self._host = str(settings.get("host", "localhost"))
        self._port = int(settings.get("port", 6379))
        self._hello: list[tuple[Any, ...]] = []
        if settings.get("password"):
            user = settings.get("username")
            self._hello.append(("AUTH", user, settings["password"]) if user else ("AUTH", settings["password"]))
        if int(settings.get("db", 0)):
            self._hello.append(("SELECT", int(settings["db"])))
        self._idle: list[_Connection] = []
        self._limiter = trio.CapacityLimiter(pool_size)

    async def _connect(self) -> _Connection:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            conn = _Connection(await trio.open_tcp_stream(self._host, self._port))
        try:
            for command in self._hello:
                with trio.fail_after(REPLY_TIMEOUT_S):
                    _raise_error(await conn.request(command))
        except BaseException:
            conn.close()
            raise
        return conn

    async def _lend(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if trio.current_time() - conn.used < IDLE_CHECK_S:
                return conn
            try:  # long idle: the server may have closed it meanwhile
                with trio.fail_after(REPLY_TIMEOUT_S):
                    _raise_error(await conn.request(("PING",)))
                return conn
            except _LOST:
                conn.close()
            except BaseException:  # an outage reply, or cancelled: not lent, not kept
                conn.close()
                raise
        return await self._connect()

    async def execute(self, *args: Any, wait_s: float = 0.0) -> Any:
        """One command's reply; wait_s is how long the server may block on it (BLPOP, XREAD)."""
        async with self._limiter:
            conn: _Connection | None = None
            try:
                conn = await self._lend()
                with trio.fail_after(REPLY_TIMEOUT_S + wait_s):
                    reply = await conn.request(args)
            except _LOST as exc:
                if conn is not None:
                    conn.close()
                raise StoreUnavailable(f"Redis unavailable: {exc!r}") from exc
            except BaseException:
                # cancelled mid-command: its reply may still come, so the connection is spent
                if conn is not None:
                    conn.close()
                raise
            self._idle.append(conn)
        return _raise_error(reply)

    async def evalsha(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a redis-py Script (its sha and source) by its sha, loading it where the server has
        not got it (a new or flushed server)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.script, len(keys), *keys, *args)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
