"""The one way an actor retries a store call that must not be dropped: wait, doubling from
`first` up to `cap`, and try again until it answers (or the actor is cancelled).

Actors whose work is a round on a timer (heartbeat, reaper, reconciler, tenancy, the fetcher's
claim) do not retry a failed call: they log it and the next round is the retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ..failures import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retrying(
    what: str, call: Callable[..., Awaitable[T]], *args: Any, first: float = 0.05, cap: float = 2.0
) -> T:
    """`await call(*args)`, again and again while the store is unavailable."""
    delay = first
    while True:
        try:
            return await call(*args)
        except StoreUnavailable as exc:
            log.warning("%s failed, retrying in %.2fs: %s", what, delay, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, cap)
