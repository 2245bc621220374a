"""A tenant's last hour, for the dashboard's charts: the slots the dispatch index keeps (per
5 s: jobs completed and failed, and its unfinished and running jobs, the most in the slot and
the last; touch_history in stores/lua/_lib.lua) laid out as columns over the hour. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SLOT_MS = 5000  # as HIST_SLOT_MS in _lib.lua
HOUR_MS = 3_600_000
SLOTS = HOUR_MS // SLOT_MS  # the slots of the last hour, the current one last


def columns(now_ms: int, hour: int, fields: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The last hour's slots from the fields of hour `hour` and of the hour before (in that
    order): completed and failed per slot; unfinished and running, the most a slot recorded, or
    where it recorded none the last value carried forward (null before any was recorded)."""
    this_slot = (now_ms - hour * HOUR_MS) // SLOT_MS  # slots since the hour began
    by_slot: dict[int, dict[str, int]] = {}  # slots counted from the hour before's first
    for offset, hash_ in ((SLOTS, fields[0]), (0, fields[1])):
        for name, value in hash_.items():
            kind, number = name[:1], name[1:]
            if kind in "cfqrQR" and number.isdigit():
                by_slot.setdefault(offset + int(number), {})[kind] = int(value)
    last = SLOTS + this_slot
    first = last - SLOTS + 1
    depth: dict[str, int | None] = {"q": None, "r": None}
    for earlier in sorted(s for s in by_slot if s < first):  # carried into the first slot shown
        _carry(depth, by_slot[earlier])
    out: dict[str, list[Any]] = {"completed": [], "failed": [], "unfinished": [], "running": []}
    for slot in range(first, last + 1):
        seen = by_slot.get(slot, {})
        out["completed"].append(seen.get("c", 0))
        out["failed"].append(seen.get("f", 0))
        out["unfinished"].append(seen.get("Q", seen.get("q", depth["q"])))
        out["running"].append(seen.get("R", seen.get("r", depth["r"])))
        _carry(depth, seen)
    return {"slotSeconds": SLOT_MS // 1000, "from": (hour - 1) * HOUR_MS + first * SLOT_MS, **out}


def _carry(depth: dict[str, int | None], seen: Mapping[str, int]) -> None:
    for kind in ("q", "r"):
        if kind in seen:
            depth[kind] = seen[kind]
