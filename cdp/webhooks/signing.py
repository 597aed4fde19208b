"""Standard Webhooks payloads and signatures (https://www.standardwebhooks.com).

Headers: ``webhook-id`` (the message id, the same on every attempt), ``webhook-timestamp`` (Unix
seconds of this attempt), ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
keyed with the base64-decoded part of ``whsec_<base64>``; one signature per active secret,
space-separated (during a rotation both the new and the previous secret sign).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

import orjson

PREFIX = "whsec_"
MAX_BODY_BYTES = 20 * 1024


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    mac = hmac.new(_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(signing_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in signing_secrets),
        "content-type": "application/json",
    }


def body(kind: str, timestamp: str, data: str) -> bytes:
    """``{"type", "timestamp", "data"}`` from the stored JSON ``data``; kept under 20 KB.

    Outbox payloads already cap a profile's identifiers; should one still be too large, identifiers
    are dropped from the end (and ``profile.identifiers_truncated`` set) until it fits.
    """
    out = orjson.dumps({"type": kind, "timestamp": timestamp})[:-1] + b',"data":' + data.encode() + b"}"
    if len(out) <= MAX_BODY_BYTES:
        return out
    value = orjson.loads(data)
    profile = value.get("profile") if isinstance(value, dict) else None
    idents = profile.get("identifiers") if isinstance(profile, dict) else None
    while isinstance(idents, list) and idents and len(out) > MAX_BODY_BYTES:
        del idents[len(idents) // 2 :]
        assert isinstance(profile, dict)
        profile["identifiers_truncated"] = True
        out = orjson.dumps({"type": kind, "timestamp": timestamp, "data": value})
    if len(out) > MAX_BODY_BYTES:
        out = orjson.dumps({"type": kind, "timestamp": timestamp, "data": {"truncated": True}})
    return out
