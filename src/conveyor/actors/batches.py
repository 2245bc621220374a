"""Batched writes that keep one item's bad value from failing the others in its batch.

A batch is written in one call; when the store refuses its values (DataRefused, not an outage),
it is cut in halves and each is written on its own, down to the single items that the store
refuses. A batch of n with one bad item costs about 2·log2(n) calls instead of failing n
submitters; a batch without one costs one call, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ..failures import DataRefused

T = TypeVar("T")
R = TypeVar("R")


def halves(items: Sequence[T]) -> list[Sequence[T]]:
    """How a refused batch is split: two halves, the first first (one item is not split)."""
    mid = len(items) // 2
    return [items[:mid], items[mid:]] if len(items) > 1 else []


async def write_isolating(
    items: Sequence[T], write: Callable[[Sequence[T]], Awaitable[R]]
) -> tuple[list[R], list[tuple[T, DataRefused]]]:
    """Write items with as few calls as the data allows. Returns the results of the calls that
    succeeded, and each item the store refused on its own with the store's reason."""
    results: list[R] = []
    refused: list[tuple[T, DataRefused]] = []
    pending: list[Sequence[T]] = [items] if items else []
    while pending:
        part = pending.pop()
        try:
            results.append(await write(part))
        except DataRefused as exc:
            if len(part) == 1:
                refused.append((part[0], exc))
            pending += reversed(halves(part))
    return results, refused
