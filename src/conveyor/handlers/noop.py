"""The `noop` job: does nothing and returns nothing, with any payload object. For smoke tests of a
deployment's whole path (submit, claim, record, feed) and for measuring the queue's own cost: it
runs inline (Handler.inline), as a handler that returns at once does."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..model import Envelope
from .base import FieldError, Handler, Registry

TIMEOUT_MS = 30_000


def register(registry: Registry, config: Config) -> None:
    def validate(payload: dict[str, Any]) -> list[FieldError]:
        return []

    def run(job: Envelope, payload: dict[str, Any]) -> None:
        return None

    registry.register(Handler("noop", validate, run, default_timeout_ms=lambda p: TIMEOUT_MS, inline=True))
