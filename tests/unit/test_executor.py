"""The executor's outcomes, with in-memory handlers on trio's MockClock (no stores involved)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from conveyor.actors.executor import JobCounts, execute, run_executor
from conveyor.actors.pool import CancelReason, ExecutorPool
from conveyor.config import Config
from conveyor.handlers import FieldError, Handler, JobFailed, Registry
from conveyor.metrics import Metrics
from conveyor.model import Envelope, Finished, Outcome, Started
from conveyor.progress import Flusher

CONFIG = Config(backoff_base_ms=1000, backoff_cap_ms=60_000)


def act(payload: dict[str, Any]) -> Any:
    """What the test handlers do, by payload["do"] (the async one waits forever on "hang" first)."""
    action = payload["do"]
    if action == "succeed":
        return {"n": 1}
    if action == "fail":
        raise ValueError("bad input")
    if action == "final":
        raise JobFailed("no point retrying", retryable=False)
    if action == "unserialisable":
        return object()
    if action == "return":
        return payload["value"]
    if action == "say":
        raise JobFailed(payload["value"])
    if action == "bounded":  # does the attempt run under its timeout's cancel scope?
        return trio.current_effective_deadline() != math.inf
    return None


def registry() -> Registry:
    """Type "t" is an async handler, "i" the same as an inline one."""
    reg = Registry()

    def ok(p: dict[str, Any]) -> list[FieldError]:
        return []

    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        if payload["do"] == "hang":
            await trio.sleep_forever()
        return act(payload)

    reg.register(Handler("t", ok, run, default_timeout_ms=lambda p: 1000))
    reg.register(Handler("i", ok, lambda job, payload: act(payload), default_timeout_ms=lambda p: 1000, inline=True))
    return reg


def job(do: str, attempt: int = 1, max_attempts: int = 3, timeout_ms: int = 5000, type_: str = "t") -> Envelope:
    return Envelope(f"id-{do}", "tenant", type_, {"do": do}, attempt, max_attempts, timeout_ms)


async def run_one(envelope: Envelope, pool: ExecutorPool | None = None) -> tuple[list[Any], Finished]:
    send, recv = trio.open_memory_channel[Any](10)
    finished = await execute(envelope, send, pool or ExecutorPool(1), registry(), CONFIG, JobCounts(Metrics()), Flusher(send, 1.0))
    return [m for m in iter(lambda: _nowait(recv), None)], finished


def _nowait(recv: trio.MemoryReceiveChannel[Any]) -> Any:
    try:
        return recv.receive_nowait()
    except trio.WouldBlock:
        return None


async def test_success_records_start_then_result(autojump_clock: Any) -> None:
    sent, finished = await run_one(job("succeed"))
    assert [type(m) for m in sent] == [Started]
    assert (finished.outcome, finished.result) == (Outcome.COMPLETED, {"n": 1})


async def test_an_inline_handler_runs_in_place_and_its_start_goes_with_its_end(autojump_clock: Any) -> None:
    pool = ExecutorPool(1)
    sent, finished = await run_one(job("succeed", type_="i"), pool)
    # no Started record (the recorder writes the start with the end)
    assert sent == [] and pool.running_count() == 0
    assert (finished.outcome, finished.result, finished.result_json) == (Outcome.COMPLETED, {"n": 1}, '{"n":1}')
    # no timeout scope around it (an async handler runs under one)
    assert (await run_one(job("bounded", type_="i"), pool))[1].result is False
    assert (await run_one(job("bounded", type_="t"), pool))[1].result is True


def test_an_async_function_cannot_be_registered_inline() -> None:
    async def run(job: Envelope, payload: dict[str, Any]) -> None:
        return None

    with pytest.raises(ValueError, match="inline handler's run is a plain function"):
        Registry().register(Handler("x", lambda p: [], run, default_timeout_ms=lambda p: 1, inline=True))


@pytest.mark.parametrize("type_", ["t", "i"])
async def test_failure_retries_with_backoff_then_fails(autojump_clock: Any, type_: str) -> None:
    _, first = await run_one(job("fail", attempt=1, type_=type_))
    assert first.outcome is Outcome.RETRY and 500 <= first.delay_ms <= 1000
    assert first.error == "ValueError: bad input"
    _, second = await run_one(job("fail", attempt=2, type_=type_))
    assert second.outcome is Outcome.RETRY and 1000 <= second.delay_ms <= 2000
    _, last = await run_one(job("fail", attempt=3, type_=type_))
    assert last.outcome is Outcome.FAILED and last.error == "ValueError: bad input"


@pytest.mark.parametrize("type_", ["t", "i"])
async def test_non_retryable_failure_ends_at_once(autojump_clock: Any, type_: str) -> None:
    _, finished = await run_one(job("final", attempt=1, type_=type_))
    assert (finished.outcome, finished.error) == (Outcome.FAILED, "no point retrying")


@pytest.mark.parametrize("type_", ["t", "i"])
async def test_a_result_that_cannot_be_stored_is_a_failure(autojump_clock: Any, type_: str) -> None:
    # it ran to its end and would return the same again: FAILED at once, saying why
    _, finished = await run_one(job("unserialisable", type_=type_))
    assert finished.outcome is Outcome.FAILED and finished.result is None
    assert finished.error == "the handler's result cannot be stored: result is of type object, which is not a JSON value"
    cases = {
        "Infinity": ({"sum": float("inf")}, "result.sum must be a finite number"),
        "NaN": ([1, float("nan")], "result[1] must be a finite number"),
        "NUL": ({"a": "x\x00y"}, "result.a must not contain the NUL character"),
        "a surrogate": ({"\ud800": 1}, "result must not have a key with a lone UTF-16 surrogate"),
        "too big": ("x" * (1024 * 1024 + 1), "result is 1048579 bytes of JSON, more than the limit"),
    }
    for name, (value, message) in cases.items():
        envelope = Envelope(f"id-{name}", "tenant", type_, {"do": "return", "value": value}, 1, 3, 5000)
        _, finished = await run_one(envelope)
        assert finished.outcome is Outcome.FAILED, name
        assert message in (finished.error or ""), (name, finished.error)


@pytest.mark.parametrize("type_", ["t", "i"])
async def test_an_error_message_is_made_storable(autojump_clock: Any, type_: str) -> None:
    envelope = Envelope("id-say", "tenant", type_, {"do": "say", "value": "a\x00b\udc80" + "z" * 9000}, 1, 3, 5000)
    _, finished = await run_one(envelope)
    assert finished.outcome is Outcome.RETRY
    assert finished.error == "a\ufffdb\ufffd" + "z" * 3996


async def test_timeout_ends_the_attempt(autojump_clock: Any) -> None:
    start = trio.current_time()
    _, finished = await run_one(job("hang", timeout_ms=250))
    assert finished.error == "timed out after 250 ms" and finished.outcome is Outcome.RETRY
    assert trio.current_time() - start == 0.25


async def test_unknown_type_fails_and_is_retried(autojump_clock: Any) -> None:
    envelope = Envelope("x", "tenant", "nope", {}, 1, 3, 1000)
    send, _recv = trio.open_memory_channel[Any](10)
    finished = await execute(envelope, send, ExecutorPool(1), registry(), CONFIG, JobCounts(Metrics()), Flusher(send, 1.0))
    assert finished.outcome is Outcome.RETRY and "no handler" in finished.error


async def test_drain_cancel_hands_back_and_lost_lease_records_nothing(autojump_clock: Any) -> None:
    for reason, outcome in ((CancelReason.DRAIN, Outcome.HANDBACK), (CancelReason.LOST, Outcome.LOST)):
        pool = ExecutorPool(1)
        results: list[Finished] = []

        async def go(pool: ExecutorPool = pool, results: list[Finished] = results) -> None:
            results.append((await run_one(job("hang"), pool))[1])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go)
            await trio.testing.wait_all_tasks_blocked()
            assert pool.running_count() == 1
            assert pool.cancel("id-hang", 1, reason)
        assert results[0].outcome is outcome
        assert pool.running_count() == 0


async def test_after_the_grace_period_unstarted_jobs_go_back(autojump_clock: Any) -> None:
    pool = ExecutorPool(1)
    pool.handing_back = True
    sent, finished = await run_one(job("succeed"), pool)
    assert sent == [] and finished.outcome is Outcome.HANDBACK


async def test_an_executor_cancelled_mid_job_lets_the_lease_expire(autojump_clock: Any) -> None:
    pool = ExecutorPool(2)
    jobs_send, jobs_recv = trio.open_memory_channel[Envelope](2)
    records_send, records_recv = trio.open_memory_channel[Any](10)
    envelope = job("hang")
    assert await pool.take_slots(1) == 1
    pool.hold_lease(envelope.id, envelope.attempt, envelope.tenant_id)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_executor, jobs_recv, records_send, pool, registry(), CONFIG, Metrics(),
            Flusher(records_send, 1.0),
        )
        await jobs_send.send(envelope)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.running_count() == 1
        nursery.cancel_scope.cancel()  # e.g. the pipeline restarts the executors
    assert pool.leases == {}  # no longer heartbeated: it will expire and be reaped
    assert pool.busy() == 0
    assert isinstance(records_recv.receive_nowait(), Started)
