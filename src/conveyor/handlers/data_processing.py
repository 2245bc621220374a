"""The `data_processing` job: count, sum, mean, min or max of a field, optionally grouped.

`aggregate` is pure; the handler runs it in a worker thread so a large input never blocks
the event loop.
"""

from __future__ import annotations

from typing import Any

import trio

from ..config import Config
from ..model import Envelope
from .base import FieldError, Handler, JobFailed, Registry

OPERATIONS = ("count", "sum", "mean", "min", "max")
MAX_RECORDS = 100_000


def validate(payload: dict[str, Any]) -> list[FieldError]:
    errors = []
    records = payload.get("records")
    if not isinstance(records, list) or len(records) > MAX_RECORDS:
        errors.append(FieldError("records", f"must be an array of at most {MAX_RECORDS} objects"))
    elif not all(isinstance(r, dict) for r in records):
        errors.append(FieldError("records", "every record must be an object"))
    if payload.get("operation") not in OPERATIONS:
        errors.append(FieldError("operation", f"must be one of {', '.join(OPERATIONS)}"))
    if not isinstance(payload.get("field"), str) or not payload.get("field"):
        errors.append(FieldError("field", "must be a non-empty string"))
    group_by = payload.get("groupBy")
    if group_by is not None and (not isinstance(group_by, str) or not group_by):
        errors.append(FieldError("groupBy", "must be a non-empty string when given"))
    return errors


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _reduce(operation: str, records: list[dict[str, Any]], field: str) -> dict[str, Any]:
    if operation == "count":
        return {"count": sum(1 for r in records if r.get(field) is not None)}
    values = [v for v in (_number(r.get(field)) for r in records) if v is not None]
    skipped = sum(1 for r in records if r.get(field) is not None) - len(values)
    if skipped:
        raise JobFailed(f"{skipped} record(s) have a non-numeric {field!r}", retryable=False)
    if operation == "sum":
        value: float | None = sum(values)
    elif not values:
        value = None
    elif operation == "mean":
        value = sum(values) / len(values)
    elif operation == "min":
        value = min(values)
    else:
        value = max(values)
    return {operation: value, "count": len(values)}


def aggregate(payload: dict[str, Any]) -> dict[str, Any]:
    records, operation, field = payload["records"], payload["operation"], payload["field"]
    group_by = payload.get("groupBy")
    out: dict[str, Any] = {"operation": operation, "field": field, "records": len(records)}
    if group_by is None:
        out["value"] = _reduce(operation, records, field)[operation]
        return out
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        key = record.get(group_by)
        groups.setdefault("null" if key is None else str(key), []).append(record)
    out["groupBy"] = group_by
    out["groups"] = {key: _reduce(operation, rows, field)[operation] for key, rows in groups.items()}
    return out


def register(registry: Registry, config: Config) -> None:
    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        # abandoned on timeout: the attempt ends at its deadline even if the thread runs on
        return await trio.to_thread.run_sync(aggregate, payload, abandon_on_cancel=True)

    registry.register(
        Handler("data_processing", validate, run, default_timeout_ms=lambda p: 120_000)
    )
