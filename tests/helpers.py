"""Helpers shared by the integration and acceptance tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from conveyor.node import Node


def base_url(node: Node) -> str:
    return node.urls[0]


async def wait_until(predicate: Callable[[], Any], *, interval: float = 0.02) -> Any:
    """Poll an async or sync predicate until it returns something truthy.

    Callers bound it with trio.fail_after (every I/O test has a deadline).
    """
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        await trio.sleep(interval)
