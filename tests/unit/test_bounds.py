"""The bounds one tenant cannot push past: the request-body budget, the per-node read rate, and
batched writes that find the one bad item instead of failing its batch. No stores here: fakes
and trio's MockClock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from conveyor.actors.batches import halves, write_isolating
from conveyor.config import Config
from conveyor.limits import ReadLimiter, defaults
from conveyor.stores.postgres import DataRefused
from conveyor.web.bodies import SETTLE_S, ByteBudget, _Body


async def test_budget_serves_in_order_within_the_total(autojump_clock: Any) -> None:
    budget = ByteBudget(total=10, per_owner=10)
    assert await budget.take("a", 6) == 6
    order: list[str] = []

    async def wants(owner: str, size: int) -> None:
        await budget.take(owner, size)
        order.append(owner)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wants, "b", 6)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wants, "c", 1)  # fits, but b waits for room first: c queues behind
        await trio.testing.wait_all_tasks_blocked()
        assert order == [] and budget.statistics().waiting == 2
        budget.give("a", 6)
    assert sorted(order) == ["b", "c"] and budget.used == 7  # both granted by that one give


async def test_one_owner_cannot_take_the_others_share(autojump_clock: Any) -> None:
    budget = ByteBudget(total=100, per_owner=25)
    for _ in range(2):
        await budget.take("flood", 10)
    with trio.move_on_after(1) as waited:
        await budget.take("flood", 10)  # 30 > its share of 25
    assert waited.cancelled_caught
    assert budget.statistics().waiting == 0  # a waiter that gave up leaves the line
    assert await budget.take("other", 25) == 25  # not held up by the flood's waiters


async def test_a_request_larger_than_a_share_still_passes_alone(autojump_clock: Any) -> None:
    budget = ByteBudget(total=100, per_owner=25)
    assert await budget.take("a", 80) == 25  # reserved as one share: it is never refused forever
    budget.give("a", 25)
    assert budget.used == 0 and budget.statistics() == budget.statistics().__class__(100, 0, 0)


async def test_a_grant_and_a_deadline_at_once_leave_nothing_held(autojump_clock: Any) -> None:
    # the gate's pattern: whatever take() returned is given back, and a waiter whose deadline
    # passed is never granted afterwards
    budget = ByteBudget(total=10, per_owner=10)
    await budget.take("a", 10)

    async def give_at(t: float) -> None:
        await trio.sleep(t)
        budget.give("a", 10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(give_at, 1.0)
        reserved = 0
        with trio.move_on_after(1.0):
            reserved = await budget.take("b", 10)
        if reserved:
            budget.give("b", reserved)
    assert budget.used == 0 and budget.statistics().waiting == 0


async def test_an_answer_before_the_end_of_its_request_says_it_closes(autojump_clock: Any) -> None:
    # hypercorn closes a connection whose request was not read to its end when the answer ends:
    # the answer must say so, or a client reuses the connection and sees it dropped
    for end_after in (SETTLE_S / 2, SETTLE_S * 2, None):
        sent = await _answer_early(end_after)
        closes = (b"connection", b"close") in sent[0]["headers"]
        assert closes == (end_after is None or end_after > SETTLE_S), (end_after, sent[0])
        assert (b"a", b"b") in sent[0]["headers"] and sent[1]["type"] == "http.response.body"


async def _answer_early(end_after: float | None) -> list[dict[str, Any]]:
    """Answer a request whose body's end comes end_after seconds later (None: never)."""
    arrived, incoming = trio.open_memory_channel[dict[str, Any]](4)
    body = _Body(incoming.receive)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def client() -> None:
        await arrived.send({"type": "http.request", "body": b"x", "more_body": True})
        if end_after is not None:
            await trio.sleep(end_after)
            await arrived.send({"type": "http.request", "body": b"", "more_body": False})

    async def reader() -> None:
        while True:
            await body.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        nursery.start_soon(reader)
        await body.answer(send)({"type": "http.response.start", "status": 400, "headers": [(b"a", b"b")]})
        await body.answer(send)({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()
    return sent


def test_read_limiter_is_a_token_bucket_per_tenant() -> None:
    config = Config(tenant_read_rate=10.0, tenant_read_burst=3)
    reads = ReadLimiter(lambda tenant: defaults(config))
    assert [reads.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert reads.take("a", 0.0) == pytest.approx(0.1)  # empty: one more in 100 ms
    assert reads.take("b", 0.0) == 0.0  # another tenant has its own bucket
    assert reads.take("a", 0.1) == 0.0
    unlimited = ReadLimiter(lambda tenant: defaults(Config(tenant_read_rate=0.0)))
    assert all(unlimited.take("a", 0.0) == 0.0 for _ in range(1000))


def test_read_limiter_forgets_full_buckets_only() -> None:
    config = Config(tenant_read_rate=1.0, tenant_read_burst=1)
    reads = ReadLimiter(lambda tenant: defaults(config))
    reads.MAX_TENANTS = 2
    reads.take("a", 0.0)
    reads.take("b", 0.0)
    reads.take("c", 5.0)  # a and b are full again by now: forgotten, c is kept
    assert reads.take("c", 5.0) > 0  # c's bucket was not forgotten with them


async def test_write_isolating_finds_each_refused_item() -> None:
    calls: list[list[int]] = []

    async def write(part: Sequence[int]) -> list[int]:
        calls.append(list(part))
        if any(n % 7 == 3 for n in part):
            raise DataRefused(f"bad {[n for n in part if n % 7 == 3]}")
        return list(part)

    results, refused = await write_isolating(list(range(20)), write)
    assert sorted(n for part in results for n in part) == [n for n in range(20) if n % 7 != 3]
    assert [n for n, _ in refused] == [3, 10, 17]
    assert all(str(exc) == f"bad [{n}]" for n, exc in refused)

    calls.clear()
    results, refused = await write_isolating(list(range(100)), lambda part: _one_bad(part, calls))
    assert [n for n, _ in refused] == [42] and len(calls) <= 2 * 7 + 1  # about 2·log2(n) calls

    calls.clear()
    results, refused = await write_isolating(list(range(20)), lambda part: _ok(part, calls))
    assert refused == [] and calls == [list(range(20))]  # a good batch costs one call
    assert await write_isolating([], write) == ([], [])


async def _one_bad(part: Sequence[int], calls: list[list[int]]) -> list[int]:
    calls.append(list(part))
    if 42 in part:
        raise DataRefused("bad")
    return list(part)


async def _ok(part: Sequence[int], calls: list[list[int]]) -> list[int]:
    calls.append(list(part))
    return list(part)


def test_halves() -> None:
    assert halves([1, 2, 3]) == [[1], [2, 3]] and halves([1]) == []


async def test_a_tenants_reads_wait_behind_its_own_only(autojump_clock: Any) -> None:
    from conveyor.limits import Limited
    from conveyor.metrics import Metrics
    from conveyor.web.reads import READS_AT_ONCE, TenantReads

    config = Config(tenant_read_rate=1000.0, tenant_read_burst=1000)
    reads = TenantReads(lambda tenant: defaults(config), Metrics())
    inside: list[str] = []
    release = trio.Event()

    async def read(tenant: str) -> None:
        async with reads.read(tenant):
            inside.append(tenant)
            await release.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(READS_AT_ONCE + 3):
            nursery.start_soon(read, "flood")
        await trio.testing.wait_all_tasks_blocked()
        assert inside == ["flood"] * READS_AT_ONCE  # the rest of the flood waits
        nursery.start_soon(read, "other")
        await trio.testing.wait_all_tasks_blocked()
        assert inside.count("other") == 1  # not behind the flood
        release.set()
    assert inside.count("flood") == READS_AT_ONCE + 3 and reads._slots == {}

    limited = TenantReads(lambda tenant: defaults(Config(tenant_read_rate=1.0, tenant_read_burst=1)), Metrics())
    async with limited.read("a"):
        pass
    with pytest.raises(Limited) as refused:
        async with limited.read("a"):
            pass
    assert refused.value.retry_after_ms == 1001 and "read rate of 1" in str(refused.value)
