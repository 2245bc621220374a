"""The storable-value rule: what it refuses, the field it names, and that what it accepts can be
encoded the way the stores need (hypothesis over JSON-shaped values, hostile ones included)."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import storable

# strings as an attacker sends them: any code point, lone surrogates and NUL included
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "x\udfff", "\U0001f600", ""]
)
scalars = (
    st.none() | st.booleans() | st.integers() | texts
    | st.floats(allow_nan=True, allow_infinity=True)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": [value]}
    return value


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ({"v": float("inf")}, "v", "must be a finite number"),
        ({"records": [{"v": 1}, {"v": float("-inf")}]}, "records[1].v", "must be a finite number"),
        ([float("nan")], "[0]", "must be a finite number"),
        ({"x": "a\x00"}, "x", "must not contain the NUL character"),
        ({"x": ["\ud800"]}, "x[0]", "must not contain a lone UTF-16 surrogate"),
        ({"a\x00": 1}, "", "must not have a key with the NUL character"),
        ({"p": {"\udc80": 1}}, "p", "must not have a key with a lone UTF-16 surrogate"),
        ({"odd key": {"v": float("nan")}}, '["odd key"].v', "must be a finite number"),
        (deep(40), "a[0].a[0].a[0]", "is nested more than 64 levels deep"),
        (float("nan"), "", "must be a finite number"),
    ],
)
def test_problem_names_the_field(value: Any, path: str, message: str) -> None:
    found = storable.problem(value)
    assert found is not None
    where, why = found
    assert where.startswith(path or "value") and why.startswith(message), found
    assert len(where) == len(path or "value") or path.endswith("a[0]")


def test_problem_accepts_what_can_be_stored() -> None:
    for value in (None, True, 0, 10**30, -1.5, "é\U0001f600", {"a": [1, {"b": None}]}, deep(31)):
        assert storable.problem(value) is None, value


def test_values_of_other_python_types_are_judged_as_json_writes_them() -> None:
    """A handler's result may hold tuples, int-like and str-like objects, non-string keys: the
    quick check leaves them to the long walk, which judges them as json would write them."""

    class Level(enum.IntEnum):
        HIGH = 1

    class Text(str):
        pass

    for value in ((1, "a"), {"l": Level.HIGH}, {1: "one", None: 2}, [Text("fine")], deep(32)):
        assert storable.problem(value) is None, value
    assert storable.problem({"s": {1, 2}}) == ("s", "is of type set, which is not a JSON value")
    assert storable.problem([(1, Text("a\x00"))]) == ("[0][1]", "must not contain the NUL character (\\u0000)")
    assert storable.problem(deep(33)) is not None  # two containers a step: the 65th is too deep
    assert storable.problem({"k": (float("nan"),)}) == ("k[0]", "must be a finite number (NaN and Infinity cannot be stored)")


def test_paths_start_where_the_caller_says() -> None:
    assert storable.problem({"v": float("inf")}, "result") == ("result.v", storable.problem({"v": 1e400})[1])  # type: ignore[index]


def test_loads_is_strict_utf8_and_reports_malformed_json() -> None:
    assert storable.loads(b'{"a": "\\u00e9"}') == {"a": "é"}
    for raw in (b'{"a": "\xed\xa0\x80"}', b"\xff", b'{"a": 1', b"[" * 100_000, b"1" * 5000):
        with pytest.raises(storable.Malformed):
            storable.loads(raw)
    # NaN and escaped NUL parse, so that `problem` can name the field that holds them
    value = storable.loads(b'{"x": NaN, "y": "\\u0000", "z": 1e999}')
    assert math.isnan(value["x"]) and value["y"] == "\x00" and value["z"] == float("inf")


def test_clean_text_keeps_what_can_be_stored() -> None:
    assert storable.clean_text("a\x00b\ud800c", 100) == "a\ufffdb\ufffdc"
    assert storable.clean_text("x" * 10, 4) == "xxxx"


@settings(max_examples=500, deadline=None)
@given(values)
def test_what_problem_accepts_encodes_for_postgresql_and_redis(value: Any) -> None:
    if storable.problem(value) is not None:
        return
    text = storable.dumps(value)  # allow_nan=False: raises on NaN and Infinity
    text.encode("utf-8")  # raises on a lone surrogate
    decoded = json.loads(text)

    def strings(v: Any) -> list[str]:
        if isinstance(v, str):
            return [v]
        if isinstance(v, list):
            return [s for item in v for s in strings(item)]
        if isinstance(v, dict):
            return [s for k, item in v.items() for s in [k, *strings(item)]]
        return []

    assert all("\x00" not in s for s in strings(decoded))


@settings(max_examples=500, deadline=None)
@given(values)
def test_problem_refuses_every_unstorable_value(value: Any) -> None:
    """The converse: a value that json or UTF-8 cannot encode strictly, or that holds NUL, is
    refused."""
    try:
        text = json.dumps(value, allow_nan=False)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        bad = "\\u0000" in text.replace("\\\\", "")
    except (ValueError, UnicodeEncodeError):
        bad = True
    if bad:
        assert storable.problem(value) is not None
