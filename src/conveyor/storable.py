"""Storable values: the one rule for what conveyor accepts and keeps. Pure, no I/O.

PostgreSQL's jsonb and text cannot hold NaN or ±Infinity, the NUL character, or a lone UTF-16
surrogate, and Python's json module lets all of them through. Every value that enters — request
bodies, query and path parameters, admin fields, handler results, error texts — is checked (or,
for error texts, cleaned) here, so that a store never refuses one tenant's value in a batch that
holds another's.
"""

from __future__ import annotations

import json
import math
import re
from json.encoder import encode_basestring_ascii as _encode_basestring_ascii
from typing import Any

MAX_DEPTH = 64  # nesting of arrays and objects; PostgreSQL's own limit is far deeper
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Malformed(ValueError):
    """The bytes are not a JSON text (or not UTF-8)."""


def loads(raw: bytes | str) -> Any:
    """Parse a JSON text. Strict UTF-8: bytes of a lone surrogate are refused here. NaN and
    Infinity parse (as Python's json does), and `problem` then names the field that holds one."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise Malformed(f"is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"is not valid JSON: {exc}") from None


def _unstorable(value: str) -> str | None:
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found[0] == "\x00":
        return "the NUL character (\\u0000)"
    return "a lone UTF-16 surrogate (\\ud800-\\udfff)"


def _storable(value: Any, max_depth: int) -> bool:
    """Whether a value can be stored, checked without building a field path for each part (a
    1,000-job batch has thousands): True only for plain JSON types (str, int, bool, None, finite
    float, dict with string keys, list, tuple) within max_depth and free of unstorable text.
    False when something is, or may be, wrong: `problem` then walks it the long way and names it."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict:
            if depth >= max_depth:
                return False
            for key, inner in item.items():
                if type(key) is not str or _UNSTORABLE.search(key) is not None:
                    return False
                stack.append((inner, depth + 1))
        elif kind is list or kind is tuple:
            if depth >= max_depth:
                return False
            stack.extend((inner, depth + 1) for inner in item)
        elif kind is str:
            if _UNSTORABLE.search(item) is not None:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is not int and kind is not bool and item is not None:
            return False
    return True


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored, or None."""
    bad = _unstorable(value)
    return None if bad is None else f"must not contain {bad}"


def _key_path(path: str, key: str) -> str:
    if key.isidentifier() and key.isascii():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def problem(value: Any, path: str = "", max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first part of a decoded JSON value that cannot be stored, as (field path, message),
    or None when all of it can. Paths read like `payload.records[1].v`."""
    if _storable(value, max_depth):
        return None  # the common case, checked without building a path for every part
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            why = text_problem(item)
            if why is not None:
                return where or "value", why
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where or "value", "must be a finite number (NaN and Infinity cannot be stored)"
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return where or "value", f"is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                for key in reversed(list(item)):
                    if not isinstance(key, str):
                        # json writes these as strings; anything else it refuses
                        if key is None or isinstance(key, int | float):
                            stack.append((item[key], f"{where}[{key!r}]", depth + 1))
                            continue
                        return where or "value", "must have string keys"
                    bad = _unstorable(key)
                    if bad is not None:
                        return where or "value", f"must not have a key with {bad}"
                    stack.append((item[key], _key_path(where, key), depth + 1))
            else:
                for i in range(len(item) - 1, -1, -1):
                    stack.append((item[i], f"{where}[{i}]", depth + 1))
        elif item is not None and not isinstance(item, bool | int):
            return where or "value", f"is of type {type(item).__name__}, which is not a JSON value"
    return None


def quote(text: str) -> str:
    """A string as JSON text, as json.dumps writes it (ASCII, escaped): for text written from a
    template."""
    return _encode_basestring_ascii(text)


_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # json.dumps makes one a call


def dumps(value: Any) -> str:
    """Compact JSON of a value that `problem` accepted."""
    return _COMPACT.encode(value)


def clean_text(value: str, limit: int) -> str:
    """A text that can be stored (NUL and lone surrogates become U+FFFD), at most limit
    characters: for messages built from what a handler or a remote server said."""
    return _UNSTORABLE.sub("\ufffd", value[:limit])
