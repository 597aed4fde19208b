"""Cursor pagination: ``{"data": [...], "cursor": {"next": "<opaque or null>", "has_more": bool}}``."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from cdp.errors import InvalidCursor, InvalidInput

T = TypeVar("T")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass
class Page(Generic[T]):
    data: list[T]
    next: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_more(self) -> bool:
        return self.next is not None

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "cursor": {"next": self.next, "has_more": self.has_more}, **self.extra}


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}", {"field": "limit"})
    return limit


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor(
            "the cursor is not one this API returned; pass cursor.next from the previous page unchanged",
            {"field": "cursor"},
        ) from exc
    if not isinstance(value, dict):
        raise InvalidCursor("the cursor is not one this API returned", {"field": "cursor"})
    return value
