"""Limits on JSON input: how deep it nests and how large its integers are.

Tracking messages and CRM records keep integers beyond 64 bits **exactly, as strings** (``2**64`` is stored
as ``"18446744073709551616"``, not the float ``1.8446744073709552e+19``). Admin and read bodies (segment
definitions, webhooks, ...) refuse them with a 400 naming the path, as they refuse nesting deeper than
:data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from cdp.errors import InvalidInput

MAX_DEPTH = 64  # admin and read bodies: objects and arrays within each other
MESSAGE_MAX_DEPTH = 254  # a tracking message or a record, itself level 1 (the JSON writer's own limit)
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Only a run of 19 or more digits can be an integer outside 64 bits: the slow exact parse runs only then.
_LONG_DIGITS = re.compile(rb"\d{19,}")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_ZEROS = b"0" * 19


def _long_digits(raw: bytes) -> bool:
    """Is there a run of 19 or more ASCII digits? (A C-speed scan: the regex over every body cost about a
    quarter of ingest's CPU per event.)"""
    return _NINETEEN_ZEROS in raw.translate(_DIGITS_AS_ZERO) and _LONG_DIGITS.search(raw) is not None


class NumberOutOfRange(InvalidInput):
    code = "number_out_of_range"


class TooDeep(InvalidInput):
    code = "nesting_too_deep"


def _exact_int(text: str) -> int | str:
    value = int(text)
    return value if INT_MIN <= value <= INT_MAX else text


def loads_exact(data: bytes | str) -> Any:
    """JSON as orjson parses it, except that integers beyond 64 bits come back as their exact digits (str)."""
    value = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if not _long_digits(raw):
        return value
    try:
        return json.loads(raw, parse_int=_exact_int)
    except RecursionError as exc:  # orjson took it (up to 1,024 levels); the exact parse cannot go as deep
        raise TooDeep(f"the JSON nests deeper than {MESSAGE_MAX_DEPTH} levels", {"limit": MESSAGE_MAX_DEPTH}) from exc


def depth_at_most(value: Any, limit: int) -> tuple[int, ...] | None:
    """None if ``value`` nests at most ``limit`` levels; else the path to the first place that goes deeper."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            children: Any = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            continue
        if depth > limit:
            return path
        for key, child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, (*path, key)))
    return None


def out_of_range(value: Any) -> tuple[tuple[Any, ...], int] | None:
    """The path and value of the first integer beyond 64 bits in ``value``, or None."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, (*path, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (*path, i)) for i, child in enumerate(item))
        elif isinstance(item, int) and not isinstance(item, bool) and not INT_MIN <= item <= INT_MAX:
            return path, item
    return None


def pointer(path: tuple[Any, ...]) -> str:
    """A JSON pointer (``/rule/all/0/value``) for error messages."""
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if path else "/"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_json_body(data: bytes) -> None:
    """Refuse an admin or read JSON body that nests deeper than MAX_DEPTH or holds an integer beyond 64 bits.

    A body that is not JSON passes (the route says what it expected).
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise TooDeep(
                f"the body nests deeper than {MAX_DEPTH} levels (objects and arrays within each other)",
                {"limit": MAX_DEPTH},
            ) from exc
        return
    where = depth_at_most(value, MAX_DEPTH)
    if where is not None:
        raise TooDeep(
            f"the body nests deeper than {MAX_DEPTH} levels (objects and arrays within each other) at "
            f"{_short(pointer(where))}",
            {"limit": MAX_DEPTH, "path": pointer(where)},
        )
    if not _long_digits(data):
        return
    try:
        exact = json.loads(data)
    except (ValueError, RecursionError):
        return
    found = out_of_range(exact)
    if found is not None:
        path, number = found
        raise NumberOutOfRange(
            f"{pointer(path)}: {number} is outside the 64-bit integer range ({INT_MIN} to {INT_MAX}); "
            "send a smaller number or a string",
            {"path": pointer(path), "min": INT_MIN, "max": INT_MAX},
        )


__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "MESSAGE_MAX_DEPTH",
    "NumberOutOfRange",
    "TooDeep",
    "check_json_body",
    "depth_at_most",
    "loads_exact",
    "out_of_range",
    "pointer",
]
