"""What a job handler is, and the registry of them by name (no handler here)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ..model import Envelope


class JobFailed(Exception):
    """A handler's failure with a clear message; retryable=False ends the job at once."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@attrs.frozen
class FieldError:
    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@attrs.frozen
class Handler:
    """A job type. `run(job, payload)` is an async function, or with inline=True a plain function
    that returns at once (no I/O, no waiting: a quick computation): the executor calls it in
    place, without a task switch or a timeout's cancel scope, since nothing could interrupt it
    anyway. A job's timeout bounds only what an async handler awaits."""

    name: str
    # payload -> problems; field names are relative to the payload ("delayMs")
    validate: Callable[[dict[str, Any]], list[FieldError]]
    run: Callable[[Envelope, dict[str, Any]], Awaitable[Any]] | Callable[[Envelope, dict[str, Any]], Any]
    # payload -> timeout in ms when the job does not give timeoutMs
    default_timeout_ms: Callable[[dict[str, Any]], int]
    inline: bool = False


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, handler: Handler) -> None:
        if handler.name in self._handlers:
            raise ValueError(f"a handler named {handler.name!r} is already registered")
        if handler.inline and inspect.iscoroutinefunction(handler.run):
            raise ValueError(f"handler {handler.name!r}: an inline handler's run is a plain function, not async")
        self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)
