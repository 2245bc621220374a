"""The trio-native Redis path (stores/redis_native.py) against a real Redis: scripts the server
does not hold yet, reply errors, a command cancelled mid-wait, a server that is not there, the
database the URL names, and feed reads that match redis-py's."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import pytest
import redis as redis_lib
import trio

from conveyor.stores import RedisStore, StoreUnavailable
from conveyor.stores.redis_native import NativeRedis, supports
from tests.conftest import PLAIN_REDIS_URL, free_port


class _Script:
    """What NativeRedis.evalsha needs of a redis-py Script: its source and sha."""

    def __init__(self, source: str) -> None:
        self.script = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


async def test_a_script_the_server_has_not_got_is_loaded_and_then_called_by_sha(redis_prefix: str) -> None:
    native = NativeRedis(PLAIN_REDIS_URL, pool_size=2)
    plain = redis_lib.Redis.from_url(PLAIN_REDIS_URL, decode_responses=True)
    script = _Script(f"return {{KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, '{secrets.token_hex(8)}'}}")
    try:
        with trio.fail_after(10):
            assert plain.script_exists(script.sha) == [False]
            first = await native.evalsha(script, [f"{redis_prefix}:k"], ["é", 41])
            assert first[:3] == [f"{redis_prefix}:k", "é", 42]
            assert plain.script_exists(script.sha) == [True]  # EVAL loaded it
            assert await native.evalsha(script, [f"{redis_prefix}:k"], ["x", 1]) == [f"{redis_prefix}:k", "x", 2, first[3]]
    finally:
        native.close()
        plain.close()


async def test_a_reply_error_raises_and_leaves_the_connection_usable(redis_prefix: str) -> None:
    native = NativeRedis(PLAIN_REDIS_URL, pool_size=1)
    try:
        with trio.fail_after(10):
            assert await native.execute("SET", f"{redis_prefix}:s", "text") == "OK"
            with pytest.raises(redis_lib.ResponseError, match="WRONGTYPE"):
                await native.execute("LPUSH", f"{redis_prefix}:s", "x")
            assert await native.execute("GET", f"{redis_prefix}:s") == "text"
            assert len(native._idle) == 1  # the same connection, back in the pool
    finally:
        native.close()


async def test_a_command_cancelled_mid_wait_spends_its_connection(redis_prefix: str) -> None:
    native = NativeRedis(PLAIN_REDIS_URL, pool_size=1)
    key = f"{redis_prefix}:wake"
    try:
        with trio.fail_after(10):
            with trio.move_on_after(0.2) as scope:
                await native.execute("BLPOP", key, 5, wait_s=5)
            assert scope.cancelled_caught
            assert native._idle == []  # its reply could still come: never lent again
            # a later BLPOP gets what is pushed, not the reply the cancelled one would have had
            plain = redis_lib.Redis.from_url(PLAIN_REDIS_URL)
            plain.rpush(key, "go")
            plain.close()
            assert await native.execute("BLPOP", key, 1, wait_s=1) == [key, "go"]
    finally:
        native.close()


async def test_no_server_is_store_unavailable_at_once() -> None:
    native = NativeRedis(f"redis://127.0.0.1:{free_port()}/0", pool_size=1)
    with trio.fail_after(5), pytest.raises(StoreUnavailable, match="Redis unavailable"):
        await native.execute("PING")


async def test_the_database_the_url_names_is_used(redis_prefix: str) -> None:
    url = _db(PLAIN_REDIS_URL, 3)
    native = NativeRedis(url, pool_size=1)
    plain = redis_lib.Redis.from_url(url, decode_responses=True)
    try:
        with trio.fail_after(10):
            await native.execute("SET", f"{redis_prefix}:db", "three", "PX", 60_000)
            assert plain.get(f"{redis_prefix}:db") == "three"
            plain.delete(f"{redis_prefix}:db")
    finally:
        native.close()
        plain.close()


def test_only_plain_tcp_urls_go_native() -> None:
    assert supports("redis://127.0.0.1:6379/0")
    assert not supports("rediss://127.0.0.1:6380/0") and not supports("unix:///tmp/redis.sock")


async def test_feed_reads_match_redis_py(redis_prefix: str) -> None:
    store = RedisStore(PLAIN_REDIS_URL, prefix=redis_prefix, pool_size=2, cluster=False, shards=1)
    plain = redis_lib.Redis.from_url(PLAIN_REDIS_URL, decode_responses=True)
    keys = [store.key("a"), store.key("b")]
    try:
        assert store._native is not None
        for i in range(3):
            plain.xadd(keys[0], {"v": f"{i}", "d": '{"x": 1}'})
        plain.xadd(keys[1], {"k": "cancel", "id": "j"})
        with trio.fail_after(10):
            native: Any = await store.read_streams({k: "0-0" for k in keys}, block_ms=100)
            store._native, kept = None, store._native
            threaded: Any = await store.read_streams({k: "0-0" for k in keys}, block_ms=100)
            store._native = kept
            assert native == threaded and [len(entries) for _, entries in native] == [3, 1]
            # nothing after the last ids: an empty answer once the block ends
            last = {key: entries[-1][0] for key, entries in native}
            assert await store.read_streams(last, block_ms=50) == []
    finally:
        plain.close()
        await store.close()


def test_a_server_that_cannot_serve_now_is_unavailable_not_a_bad_command() -> None:
    import hiredis

    from conveyor.stores.redis_native import _raise_error

    with pytest.raises(StoreUnavailable, match="LOADING"):
        _raise_error(hiredis.ReplyError("LOADING Redis is loading the dataset in memory"))
    with pytest.raises(redis_lib.ResponseError, match="WRONGTYPE"):
        _raise_error(hiredis.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert _raise_error(["ok"]) == ["ok"]


async def test_a_long_idle_connection_the_server_closed_is_replaced(redis_prefix: str) -> None:
    native = NativeRedis(PLAIN_REDIS_URL, pool_size=1)
    plain = redis_lib.Redis.from_url(PLAIN_REDIS_URL, decode_responses=True)
    try:
        with trio.fail_after(10):
            first = await native.execute("CLIENT", "ID")
            assert plain.client_kill_filter(_id=first) == 1  # the server closes it while it idles
            native._idle[0].used -= 60  # idle for longer than IDLE_CHECK_S: pinged before use
            assert await native.execute("CLIENT", "ID") != first  # a new connection answered
    finally:
        native.close()
        plain.close()
