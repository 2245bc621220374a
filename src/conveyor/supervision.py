"""OTP-style supervisors for trio actors.

A Supervisor starts its children in order with `nursery.start`, restarts them by strategy
(one_for_one, one_for_all, rest_for_one) and restart type (permanent, transient, temporary),
and gives up, raising SupervisorGaveUp to its parent, after more than `intensity` restarts in
`period` seconds. It owns no channels and knows nothing of jobs.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

log = logging.getLogger(__name__)


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only when it crashed
    TEMPORARY = "temporary"  # never restarted


class SupervisorGaveUp(Exception):
    """Raised by a supervisor whose children restarted too often; __cause__ is the last crash."""


# An actor: `async def run(*, task_status)`, calling task_status.started() once it is ready.
ActorFn = Callable[..., Awaitable[Any]]


@attrs.define
class ChildSpec:
    name: str
    run: ActorFn | Supervisor
    restart: Restart = Restart.PERMANENT
    state: str = "stopped"
    restarts: int = 0
    last_error: str | None = None


@attrs.frozen
class ChildStatistics:
    name: str
    state: str  # starting | running | stopped | crashed
    restarts: int
    last_error: str | None
    supervisor: SupervisorStatistics | None  # when the child is a supervisor

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "state": self.state, "restarts": self.restarts, "lastError": self.last_error,
        }
        if self.supervisor is not None:
            out["supervisor"] = self.supervisor.as_json()
        return out


@attrs.frozen
class SupervisorStatistics:
    name: str
    strategy: str
    restarts: int
    children: tuple[ChildStatistics, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "strategy": self.strategy, "restarts": self.restarts,
                "children": [child.as_json() for child in self.children]}

    def all_restarts(self) -> list[tuple[str, int]]:
        """(supervisor name, restarts) of this one and of every supervisor below it."""
        out = [(self.name, self.restarts)]
        for child in self.children:
            if child.supervisor is not None:
                out += child.supervisor.all_restarts()
        return out


class _StatusProxy:
    """Passes `started` through to the real task_status and remembers that it was called."""

    def __init__(self, task_status: trio.TaskStatus[Any], child: ChildSpec) -> None:
        self._task_status = task_status
        self._child = child
        self.called = False

    def started(self, value: Any = None) -> None:
        self.called = True
        self._child.state = "running"
        self._task_status.started(value)


class Supervisor:
    def __init__(
        self,
        name: str,
        children: list[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period: float = 5.0,
    ) -> None:
        if len({c.name for c in children}) != len(children):
            raise ValueError(f"supervisor {name}: child names must be unique")
        self.name = name
        self.children = children
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.restarts = 0
        self._restart_times: deque[float] = deque()
        self._scopes: list[trio.CancelScope | None] = [None] * len(children)
        self._done: list[trio.Event] = [trio.Event() for _ in children]

    # -- introspection -------------------------------------------------------------------------
    def statistics(self) -> SupervisorStatistics:
        """This supervisor and its children now, supervisors among them included."""
        return SupervisorStatistics(
            self.name, self.strategy.value, self.restarts,
            tuple(
                ChildStatistics(
                    child.name, child.state, child.restarts, child.last_error,
                    child.run.statistics() if isinstance(child.run, Supervisor) else None,
                )
                for child in self.children
            ),
        )

    def status(self) -> dict[str, Any]:
        """statistics() as the readiness route shows it."""
        return self.statistics().as_json()

    def healthy(self) -> bool:
        for child in self.children:
            if child.state != "running" and child.restart is Restart.PERMANENT:
                return False
            if isinstance(child.run, Supervisor) and not child.run.healthy():
                return False
        return True

    # -- running -------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        exits_send, exits_recv = trio.open_memory_channel[tuple[int, BaseException | None]](
            len(self.children)
        )
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                for index in range(len(self.children)):
                    await nursery.start(self._child, index, exits_send)
                task_status.started()
                live = len(self.children)
                async for index, exc in exits_recv:
                    child = self.children[index]
                    if not self._should_restart(child, exc):
                        child.state = "stopped" if exc is None else "crashed"
                        live -= 1
                        if live == 0:
                            break
                        continue
                    try:
                        self._count_restart(child, exc)
                        group = self._restart_group(index)
                        siblings = [i for i in group if i != index]
                        await self._stop(reversed(siblings))
                        for i in siblings:
                            self.children[i].restarts += 1  # restarted by the strategy
                        for i in group:
                            await self._restart_child(nursery, i, exits_send)
                    except SupervisorGaveUp as gave_up:
                        failure = gave_up
                        break
                nursery.cancel_scope.cancel()
        finally:
            for child in self.children:
                if child.state in ("running", "starting"):
                    child.state = "stopped"
        if failure is not None:
            raise failure

    def _should_restart(self, child: ChildSpec, exc: BaseException | None) -> bool:
        if child.restart is Restart.PERMANENT:
            return True
        if child.restart is Restart.TRANSIENT:
            return exc is not None
        return False

    def _count_restart(self, child: ChildSpec, exc: BaseException | None) -> None:
        now = trio.current_time()
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] < now - self.period:
            self._restart_times.popleft()
        if len(self._restart_times) > self.intensity:
            child.state = "crashed"
            err = SupervisorGaveUp(
                f"supervisor {self.name}: more than {self.intensity} restarts in {self.period}s"
                f" (last: {child.name})"
            )
            err.__cause__ = exc
            log.error("%s", err)
            raise err
        self.restarts += 1
        child.restarts += 1
        log.warning(
            "supervisor %s: restarting %s after %s",
            self.name,
            child.name,
            "a normal exit" if exc is None else repr(exc),
        )

    def _restart_group(self, index: int) -> list[int]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [index]
        if self.strategy is Strategy.ONE_FOR_ALL:
            candidates = range(len(self.children))
        else:
            candidates = range(index, len(self.children))
        return [i for i in candidates if i == index or self.children[i].state == "running"]

    async def _stop(self, indexes: Any) -> None:
        for i in indexes:
            scope = self._scopes[i]
            if scope is not None:
                scope.cancel()
            await self._done[i].wait()

    async def _restart_child(
        self, nursery: trio.Nursery, index: int, exits_send: trio.MemorySendChannel[Any]
    ) -> None:
        while True:
            try:
                await nursery.start(self._child, index, exits_send)
                return
            except Exception as exc:
                # A child that fails before it is ready counts as a crash and a restart.
                self._count_restart(self.children[index], exc)

    async def _child(
        self,
        index: int,
        exits_send: trio.MemorySendChannel[Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        child = self.children[index]
        done = self._done[index] = trio.Event()
        proxy = _StatusProxy(task_status, child)
        exc: BaseException | None = None
        child.state = "starting"
        try:
            with trio.CancelScope() as scope:
                self._scopes[index] = scope
                try:
                    run = child.run.run if isinstance(child.run, Supervisor) else child.run
                    await run(task_status=proxy)
                except Exception as crash:
                    child.last_error = repr(crash)
                    child.state = "crashed"
                    if not proxy.called:
                        raise
                    log.error("actor %s/%s crashed", self.name, child.name, exc_info=crash)
                    exc = crash
                else:
                    child.state = "stopped"
                    if not proxy.called:
                        task_status.started()
            if scope.cancelled_caught:
                child.state = "stopped"
                return  # stopped by this supervisor: not an exit to act on
            exits_send.send_nowait((index, exc))
        finally:
            self._scopes[index] = None
            done.set()
