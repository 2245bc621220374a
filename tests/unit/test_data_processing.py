from __future__ import annotations

import pytest

from conveyor.handlers import JobFailed
from conveyor.handlers.data_processing import aggregate, validate

RECORDS = [
    {"region": "eu", "amount": 10},
    {"region": "eu", "amount": 30},
    {"region": "us", "amount": 5.5},
    {"region": "us"},
]


@pytest.mark.parametrize(
    ("operation", "expected"),
    [("count", 3), ("sum", 45.5), ("mean", 45.5 / 3), ("min", 5.5), ("max", 30)],
)
def test_operations(operation: str, expected: float) -> None:
    out = aggregate({"records": RECORDS, "operation": operation, "field": "amount"})
    assert out["value"] == pytest.approx(expected)
    assert out["records"] == 4


def test_grouped() -> None:
    out = aggregate({"records": RECORDS, "operation": "sum", "field": "amount", "groupBy": "region"})
    assert out["groups"] == {"eu": 40, "us": 5.5}


def test_empty_mean_is_null() -> None:
    assert aggregate({"records": [], "operation": "mean", "field": "x"})["value"] is None


def test_non_numeric_fails_without_retry() -> None:
    with pytest.raises(JobFailed) as info:
        aggregate({"records": [{"x": "a"}], "operation": "sum", "field": "x"})
    assert not info.value.retryable


def test_validation_names_fields() -> None:
    errors = validate({"records": "no", "operation": "median", "field": ""})
    assert {e.field for e in errors} == {"records", "operation", "field"}
    assert validate({"records": [], "operation": "sum", "field": "x", "groupBy": 3})[0].field == "groupBy"
    assert validate({"records": [{"a": 1}], "operation": "sum", "field": "a"}) == []
