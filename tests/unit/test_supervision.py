"""Supervisor semantics on trio's MockClock (autojump): restarts by strategy and type, intensity."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from conveyor.supervision import ChildSpec, Restart, Strategy, Supervisor, SupervisorGaveUp


class Boom(Exception):
    pass


class Actor:
    """A test actor: counts starts, crashes or exits when poked."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.starts = 0
        self.cancelled = 0
        self._poke = trio.Event()
        self._action = ""

    def crash(self) -> None:
        self._action = "crash"
        self._poke.set()

    def exit(self) -> None:
        self._action = "exit"
        self._poke.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        self._poke = trio.Event()
        task_status.started()
        try:
            await self._poke.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        if self._action == "crash":
            raise Boom(self.name)


def make(strategy: Strategy, *restarts: Restart, intensity: int = 3, period: float = 5.0):
    actors = [Actor(f"a{i}") for i in range(len(restarts))]
    sup = Supervisor(
        "test",
        [ChildSpec(a.name, a.run, restart=r) for a, r in zip(actors, restarts, strict=True)],
        strategy=strategy,
        intensity=intensity,
        period=period,
    )
    return sup, actors


P, T, X = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY


async def test_one_for_one_restarts_only_the_crashed_child(autojump_clock: Any) -> None:
    sup, (a, b, c) = make(Strategy.ONE_FOR_ONE, P, P, P)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        b.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert (a.starts, b.starts, c.starts) == (1, 2, 1)
        assert sup.restarts == 1
        assert sup.status()["children"][1]["restarts"] == 1
        assert "Boom" in sup.status()["children"][1]["lastError"]
        nursery.cancel_scope.cancel()


async def test_one_for_all_restarts_every_child(autojump_clock: Any) -> None:
    sup, (a, b, c) = make(Strategy.ONE_FOR_ALL, P, P, P)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        b.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert (a.starts, b.starts, c.starts) == (2, 2, 2)
        assert (a.cancelled, c.cancelled) == (1, 1)
        nursery.cancel_scope.cancel()


async def test_rest_for_one_restarts_the_child_and_those_after_it(autojump_clock: Any) -> None:
    sup, (a, b, c) = make(Strategy.REST_FOR_ONE, P, P, P)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        b.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert (a.starts, b.starts, c.starts) == (1, 2, 2)
        assert a.cancelled == 0 and c.cancelled == 1
        assert [ch["restarts"] for ch in sup.status()["children"]] == [0, 1, 1]
        assert sup.restarts == 1  # one restart of the group counts once towards intensity
        nursery.cancel_scope.cancel()


async def test_restart_types(autojump_clock: Any) -> None:
    sup, (perm, trans, temp) = make(Strategy.ONE_FOR_ONE, P, T, X)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        # a normal exit: permanent restarts, transient and temporary do not
        perm.exit()
        trans.exit()
        await trio.testing.wait_all_tasks_blocked()
        assert (perm.starts, trans.starts) == (2, 1)
        # a crash: temporary is still not restarted
        temp.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert temp.starts == 1
        assert sup.status()["children"][2]["state"] == "crashed"
        nursery.cancel_scope.cancel()


async def test_transient_restarts_after_a_crash(autojump_clock: Any) -> None:
    sup, (trans,) = make(Strategy.ONE_FOR_ONE, T)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        trans.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert trans.starts == 2
        nursery.cancel_scope.cancel()


async def test_too_many_restarts_escalate_to_the_parent(autojump_clock: Any) -> None:
    sup, (a, b) = make(Strategy.ONE_FOR_ONE, P, P, intensity=2, period=10.0)
    gave_up: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for _ in range(3):
                b.crash()
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep_forever()
    except* SupervisorGaveUp as group:
        gave_up = list(group.exceptions)
    assert len(gave_up) == 1
    assert isinstance(gave_up[0].__cause__, Boom)
    assert b.starts == 3 and a.cancelled == 1


async def test_restarts_outside_the_period_are_forgiven(autojump_clock: Any) -> None:
    sup, (a,) = make(Strategy.ONE_FOR_ONE, P, intensity=2, period=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(6):
            a.crash()
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(6)  # at most two restarts fall in any 10 s window
        assert a.starts == 7
        assert sup.restarts == 6
        nursery.cancel_scope.cancel()


async def test_nested_supervisor_escalates_and_parent_restarts_it(autojump_clock: Any) -> None:
    inner, (x,) = make(Strategy.ONE_FOR_ONE, P, intensity=0, period=5.0)
    outer = Supervisor("outer", [ChildSpec("inner", inner)], intensity=3, period=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        x.crash()  # inner allows no restart: it gives up, the outer restarts it
        await trio.testing.wait_all_tasks_blocked()
        assert x.starts == 2
        assert outer.restarts == 1
        assert outer.status()["children"][0]["supervisor"]["name"] == "test"
        nursery.cancel_scope.cancel()


async def test_child_failing_before_ready_fails_the_start(autojump_clock: Any) -> None:
    async def broken(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raise Boom("init")

    sup = Supervisor("s", [ChildSpec("broken", broken)])
    failed: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    except* Boom as group:
        failed = list(group.exceptions)
    assert len(failed) == 1
    assert sup.status()["children"][0]["state"] == "crashed"


async def test_healthy_reports_a_stopped_permanent_child(autojump_clock: Any) -> None:
    sup, (a, b) = make(Strategy.ONE_FOR_ONE, P, X)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert sup.healthy()
        b.exit()
        await trio.testing.wait_all_tasks_blocked()
        assert sup.healthy()  # a temporary child may stop
        nursery.cancel_scope.cancel()


async def test_a_child_that_keeps_failing_to_restart_makes_the_supervisor_give_up(
    autojump_clock: Any,
) -> None:
    starts = []

    async def flaky(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        if len(starts) > 1:
            raise Boom("cannot start again")
        task_status.started()
        raise Boom("first crash")

    sup = Supervisor("s", [ChildSpec("flaky", flaky)], intensity=3, period=10.0)
    gave_up: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep_forever()
    except* SupervisorGaveUp as group:
        gave_up = list(group.exceptions)
    assert len(gave_up) == 1 and len(starts) == 4
    assert isinstance(gave_up[0].__cause__, Boom)
