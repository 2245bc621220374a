"""Job handlers, registered by name.

A handler validates its payload at submit time (pure, no I/O) and runs the job. Deployments add
their own types from modules named in CONVEYOR_HANDLER_MODULES; each such module defines
`register(registry, config)`.
"""

from __future__ import annotations

import importlib

from ..config import Config, ConfigError
from .base import FieldError, Handler, JobFailed, Registry

__all__ = ["FieldError", "Handler", "JobFailed", "Registry", "build_registry"]


def build_registry(config: Config) -> Registry:
    from . import data_processing, email, noop, sleep, webhook

    registry = Registry()
    for module in (email, webhook, sleep, data_processing, noop):
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
