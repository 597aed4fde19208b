"""``chunked``: long id lists as SQL ``IN (...)`` lists small enough for one statement's parameters."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import TypeVar

T = TypeVar("T")

IN_LIST_SIZE = 900  # below SQLite's oldest default limit of 999 bound parameters, with room for a few more


def chunked(items: Iterable[T], size: int = IN_LIST_SIZE) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``, in order (nothing for no items)."""
    values: Sequence[T] = items if isinstance(items, Sequence) else list(items)
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def marks(part: Sized) -> str:
    """``?,?,?``: one placeholder per item of ``part``."""
    return ",".join("?" * len(part))
