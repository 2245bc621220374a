"""What a job handler is, and the registry of them by name (no handler here)."""

from __future__ import annotations

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
    name: str
    # payload -> problems; field names are relative to the payload ("delayMs")
    validate: Callable[[dict[str, Any]], list[FieldError]]
    run: Callable[[Envelope, dict[str, Any]], Awaitable[Any]]
    # payload -> timeout in ms when the job does not give timeoutMs
    default_timeout_ms: Callable[[dict[str, Any]], int]


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, handler: Handler) -> None:
        if handler.name in self._handlers:
            raise ValueError(f"a handler named {handler.name!r} is already registered")
        self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)
