"""Request bodies: JSON whatever the Content-Type, optionally gzip, within a size limit."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from cdp.errors import InvalidJSON, InvalidMessage, PayloadTooLarge, UnsupportedEncoding
from cdp.jsonlimits import loads_exact


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body as sent before compression, refusing anything over ``limit`` bytes (gzip bombs too)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        data = body
    elif encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InvalidJSON(f"the body says Content-Encoding: gzip but is not valid gzip ({exc})") from exc
        if len(data) <= limit and not inflater.eof:
            raise InvalidJSON("the gzip body is truncated")
    else:
        raise UnsupportedEncoding(
            f"Content-Encoding {content_encoding!r} is not supported; send gzip or no encoding",
            {"content_encoding": content_encoding},
        )
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the body is larger than the {limit // 1024} KB allowed here",
            {"limit_bytes": limit},
        )
    return data


def parse_json(data: bytes) -> Any:
    if not data.strip():
        raise InvalidJSON("the body is empty; send a JSON object")
    try:
        return loads_exact(data)  # integers beyond 64 bits kept exactly, as strings
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}", {"position": exc.pos}) from exc


def decode_object(body: bytes, content_encoding: str | None, limit: int) -> dict[str, Any]:
    value = parse_json(decompress(body, content_encoding, limit))
    if not isinstance(value, dict):
        raise InvalidMessage(f"the body must be a JSON object, not {type(value).__name__}")
    return value
