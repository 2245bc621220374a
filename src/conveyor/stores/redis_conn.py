"""The connection under the Redis store: a single Redis or a Redis / Valkey Cluster, the Lua
scripts registered on it, thread hops, and the wake-up signals of cluster mode.

Single Redis: one redis-py client and connection pool, as before clusters. Cluster mode: redis-py's
cluster client, which routes each command (and each script, by its one key) to the master that
serves the slot, follows MOVED after a failover and reloads a script a new master lacks.

A cluster refuses a blocking read over keys of several slots (BLPOP, XREAD), so with more than one
shard the scripts PUBLISH a wake-up on a channel instead (PUBLISH reaches every node of a
cluster), naming the shard, and a node listens on one subscription (`Subscription`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

import redis
import trio

from ..failures import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

SCRIPTS = (
    "enqueue", "claim", "finish", "heartbeat", "reap", "promote", "reconcile", "lock", "admit",
    "cancel", "publish", "feed", "jobevents", "history", "upgrade", "setcaps",
)
# what a lost or failing-over server looks like to redis-py: the store answers StoreUnavailable
OUTAGES: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError, redis.exceptions.MasterDownError, redis.exceptions.RedisClusterException,
    redis.exceptions.ClusterError,
)


def is_cluster(url: str) -> bool:
    """Whether the server REDIS_URL names runs in cluster mode (INFO cluster). Raises
    StoreUnavailable when it cannot be reached."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
    try:
        info: Any = client.info("cluster")  # typed as maybe awaitable by some redis-py versions
        return str(info.get("cluster_enabled", 0)) == "1"
    except OUTAGES as exc:
        raise StoreUnavailable(f"Redis unavailable: {exc}") from exc
    finally:
        client.close()


def detect_cluster(url: str, setting: str) -> bool:
    """Cluster mode by setting (on | off), or by asking the server (auto), waiting for it when it
    does not answer yet: guessing would put the keys in the wrong layout."""
    if setting != "auto":
        return setting == "on"
    while True:
        try:
            return is_cluster(url)
        except StoreUnavailable as exc:
            log.warning("waiting for Redis to say whether it is a cluster (CONVEYOR_REDIS_CLUSTER=on|off "
                        "skips this): %s", exc)
            time.sleep(1.0)


class Connection:
    """A client, its scripts, and the thread hops every call makes."""

    def __init__(self, url: str, *, cluster: bool, pool_size: int) -> None:
        self.cluster = cluster
        options: dict[str, Any] = {
            "socket_timeout": 10, "socket_connect_timeout": 2, "health_check_interval": 15,
            "decode_responses": True,
        }
        self.client: Any
        if cluster:
            try:  # the cluster client asks for the slots at once
                self.client = redis.RedisCluster.from_url(url, max_connections=pool_size, **options)
            except OUTAGES as exc:  # also CONVEYOR_REDIS_CLUSTER=on against a single Redis
                raise StoreUnavailable(f"Redis unavailable: {exc}") from exc
        else:
            pool = redis.BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=2, **options)
            self.client = redis.Redis(connection_pool=pool)
        self._limiter = trio.CapacityLimiter(pool_size)
        lua = resources.files(__package__).joinpath("lua")
        lib = lua.joinpath("_lib.lua").read_text()
        self.scripts = {
            name: self.client.register_script(lib + lua.joinpath(f"{name}.lua").read_text())
            for name in SCRIPTS
        }

    def call(self, name: str, base: str, args: list[Any]) -> Any:
        """Blocking: script `name` on the shard whose key prefix is `base`. On a cluster, a
        master that does not hold the script yet (a replica promoted by a failover, a script not
        run there before) gets it loaded on it alone: redis-py's Script loads it on every
        master, and while one master was down that held a live shard's call for seconds, past
        the leases the heartbeat was extending (tests/faults/test_cluster.py)."""
        script = self.scripts[name]
        if not self.cluster:
            return script(keys=[base], args=args)
        # twice: the slot may have moved meanwhile, to another master that lacks the script
        for _ in range(2):
            try:
                return self.client.evalsha(script.sha, 1, base, *args)
            except redis.exceptions.NoScriptError:
                node = self.client.get_node_from_key(base)
                self.client.execute_command("SCRIPT LOAD", script.script, target_nodes=node)
        return self.client.evalsha(script.sha, 1, base, *args)

    async def run(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        """Run blocking client work in a thread; an outage becomes StoreUnavailable."""

        def work() -> T:
            try:
                return fn()
            except OUTAGES as exc:
                raise StoreUnavailable(f"Redis unavailable: {exc}") from exc

        return await trio.to_thread.run_sync(work, limiter=self._limiter, abandon_on_cancel=abandon)

    def connections(self) -> int:
        """Connections the pools hold open now (they grow under load up to their size)."""
        if self.cluster:
            return sum(
                len(getattr(node.redis_connection.connection_pool, "_available_connections", ()))
                + len(getattr(node.redis_connection.connection_pool, "_in_use_connections", ()))
                for node in self.client.get_nodes() if node.redis_connection is not None
            )
        return len(getattr(self.client.connection_pool, "_connections", ()))

    async def close(self) -> None:
        with trio.move_on_after(5, shield=True):
            await trio.to_thread.run_sync(self.client.close, abandon_on_cancel=True)


class Subscription:
    """One pub/sub channel, read by one actor at a time (a thread each wait): the wake-ups of
    cluster mode. Messages that arrive between two waits are kept by the connection and returned
    by the next wait, so none is missed while subscribed; after (re)subscribing the first wait
    answers None, "anything may have been missed"."""

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._pubsub: Any = None
        self._lock = threading.Lock()  # an abandoned wait may still hold the connection
        self._closed = False

    def wait(self, timeout: float) -> set[str] | None:
        """Blocking: the messages' data (shard key prefixes) that came, waiting up to timeout for
        the first; None when (re)subscribed just now."""
        if not self._lock.acquire(timeout=timeout):
            return set()
        try:
            if self._closed:
                return set()
            if self._pubsub is None:
                self._subscribe(timeout)
                return None
            return self._drain(timeout)
        except OUTAGES:
            self._drop()
            raise
        finally:
            if self._closed:
                self._drop()
            self._lock.release()

    def poll(self) -> set[str] | None:
        """Without blocking: the messages that came since the last wait or poll; None when not
        subscribed (or a wait holds the connection), so anything may have been missed."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._pubsub is None or self._closed:
                return None
            return self._drain(0)
        except OUTAGES:
            self._drop()
            return None
        finally:
            self._lock.release()

    def _drain(self, timeout: float) -> set[str]:
        """The data of the messages that came, waiting up to timeout for the first."""
        got: set[str] = set()
        message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        while message is not None:
            got.add(str(message["data"]))
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        return got

    def _subscribe(self, timeout: float) -> None:
        pubsub = self._client.pubsub()
        try:
            pubsub.subscribe(self._channel)
            deadline = time.monotonic() + max(timeout, 2.0)
            while time.monotonic() < deadline:  # registered on the server before we answer
                message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "subscribe":
                    self._pubsub = pubsub
                    return
            raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {self._channel}")
        except BaseException:
            pubsub.close()
            raise

    def _drop(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:  # a broken connection may fail to close too  # noqa: BLE001
                pass
            self._pubsub = None

    def close(self) -> None:
        """Stop listening, without blocking: a wait in progress (abandoned) drops the
        subscription when it ends."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._lock.release()
