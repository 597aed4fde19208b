"""Dependencies: the CDP instance and authentication, as typed aliases."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cdp import CDP, KeyInfo
from cdp.errors import InvalidJSON


def get_cdp(request: Request) -> CDP:
    cdp: CDP = request.app.state.cdp
    return cdp


CDPDep = Annotated[CDP, Depends(get_cdp)]


def credential(request: Request) -> str | None:
    """The secret sent as ``Bearer <token>`` or as the HTTP Basic username (Segment style)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None


# Declares the Bearer scheme on every read/admin route of /openapi.json (so /docs can authorize); the
# token itself is read by ``credential`` (Bearer, or HTTP Basic with the token as username).
TOKEN_SCHEME = HTTPBearer(
    auto_error=False,
    scheme_name="Token",
    description="A read or admin token from `cdp keys create --kind read|admin` (admin implies read).",
)
BearerDoc = Annotated[HTTPAuthorizationCredentials | None, Security(TOKEN_SCHEME)]


def require_read(request: Request, cdp: CDPDep, _doc: BearerDoc = None) -> KeyInfo:
    return cdp.keys.verify(credential(request), "read")


def require_admin(request: Request, cdp: CDPDep, _doc: BearerDoc = None) -> KeyInfo:
    return cdp.keys.verify(credential(request), "admin")


ReadKey = Annotated[KeyInfo, Depends(require_read)]
AdminKey = Annotated[KeyInfo, Depends(require_admin)]


async def json_body(request: Request) -> Any:
    """The request body as JSON, whatever its type; 400 ``invalid_json`` if it is not JSON."""
    import orjson

    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from exc
