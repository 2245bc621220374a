"""Job handlers, registered by name.

A handler validates its payload at submit time (pure, no I/O) and runs the job. Deployments add
their own types from modules named in CONVEYOR_HANDLER_MODULES; each such module defines
`register(registry, config)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ..config import Config, ConfigError
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


def build_registry(config: Config) -> Registry:
    from . import data_processing, email, sleep, webhook

    registry = Registry()
    for module in (email, webhook, sleep, data_processing):
        module.register(registry, config)
    for name in config.handler_modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"CONVEYOR_HANDLER_MODULES: cannot import {name}: {exc}") from exc
        if not callable(getattr(module, "register", None)):
            raise ConfigError(f"CONVEYOR_HANDLER_MODULES: {name} has no register(registry, config)")
        module.register(registry, config)
    return registry
