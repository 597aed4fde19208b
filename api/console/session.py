"""Console sessions: a signed, HttpOnly, SameSite=Strict cookie naming the key (never its secret), with an expiry,
and a CSRF token bound to the session for every form and every script that posts.

The cookie holds ``{"k": key id, "e": expiry (unix seconds), "n": nonce}`` signed with HMAC-SHA256. Each request
checks the signature, the expiry and that the key is still active (a revoked token signs its sessions out).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from cdp import CDP
from cdp.errors import CDPError, UnknownKey

COOKIE = "cdp_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(CDPError):
    """No valid console session: pages redirect to the sign-in form, fragments answer 401."""

    code = "sign_in_required"
    status = 401


class AdminRequired(CDPError):
    code = "admin_required"
    status = 403


class CSRFFailed(CDPError):
    code = "csrf_failed"
    status = 403


@dataclass(frozen=True)
class Session:
    key_id: str
    kind: str
    name: str
    expires: int
    nonce: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.kind == "admin"


class Signer:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, data, hashlib.sha256).digest()).decode().rstrip("=")

    def sign(self, payload: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")
        return f"{body}.{self._mac(body.encode())}"

    def unsign(self, value: str) -> dict[str, Any] | None:
        body, _, mac = value.partition(".")
        if not body or not mac or not hmac.compare_digest(mac, self._mac(body.encode())):
            return None
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
        return payload if isinstance(payload, dict) else None

    def csrf(self, nonce: str) -> str:
        return self._mac(b"csrf:" + nonce.encode())


def signer_for(cdp: CDP) -> Signer:
    configured = cdp.settings.console_secret
    return Signer(configured.get_secret_value().encode() if configured else secrets.token_bytes(32))


def new_cookie(request: Request, key_id: str) -> tuple[str, int]:
    """A cookie value for a fresh session of ``key_id`` and its lifetime in seconds."""
    cdp: CDP = request.app.state.cdp
    ttl = cdp.settings.console_session_seconds
    payload = {"k": key_id, "e": int(time.time()) + ttl, "n": secrets.token_urlsafe(16)}
    return signer(request).sign(payload), ttl


def signer(request: Request) -> Signer:
    state = request.app.state
    found: Signer | None = getattr(state, "console_signer", None)
    if found is None:
        found = state.console_signer = signer_for(state.cdp)
    return found


def current(request: Request) -> Session | None:
    """The request's valid session, or None."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    sign = signer(request)
    payload = sign.unsign(raw)
    if payload is None:
        return None
    key_id, expires, nonce = payload.get("k"), payload.get("e"), payload.get("n")
    if not isinstance(key_id, str) or not isinstance(expires, int) or not isinstance(nonce, str):
        return None
    if expires <= time.time() or nonce in revoked(request):
        return None
    cdp: CDP = request.app.state.cdp
    try:
        info = cdp.keys.get(key_id)
    except UnknownKey:
        return None
    if not info.active or not info.allows("read"):
        return None
    return Session(info.id, info.kind, info.name, expires, nonce, sign.csrf(nonce))


def revoked(request: Request) -> set[str]:
    """Nonces of sessions signed out in this process (their cookies stay refused until they expire)."""
    state = request.app.state
    found: set[str] | None = getattr(state, "console_revoked", None)
    if found is None:
        found = state.console_revoked = set()
    return found


def require_session(request: Request) -> Session:
    session = current(request)
    if session is None:
        raise SignInRequired("sign in to the console first", {"sign_in": "/console/sign-in"})
    request.state.console_session = session
    return session


async def require_admin(request: Request) -> Session:
    """An admin session whose request carries the session's CSRF token (form field or header)."""
    session = require_session(request)
    await check_csrf(request, session)
    if not session.admin:
        raise AdminRequired(
            "this action needs an admin token: sign in with one from `cdp keys create --kind admin`",
            {"kind": session.kind},
        )
    return session


async def form(request: Request) -> dict[str, str]:
    """The request's urlencoded form (last value of each field), read once and kept on the request."""
    cached: dict[str, str] | None = getattr(request.state, "console_form", None)
    if cached is not None:
        return cached
    from urllib.parse import parse_qsl

    data: dict[str, str] = {}
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        body = await request.body()
        if len(body) > 1_000_000:
            raise CDPError("the form is larger than 1 MB", {"bytes": len(body)})
        data = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.console_form = data
    return data


async def check_csrf(request: Request, session: Session) -> None:
    sent = request.headers.get(CSRF_HEADER) or (await form(request)).get(CSRF_FIELD, "")
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise CSRFFailed(
            "the form's CSRF token is missing or stale: reload the page and try again", {"field": CSRF_FIELD}
        )


async def require_acting(request: Request) -> Session:
    """Any signed-in session posting with its CSRF token (sign-out, previews)."""
    session = require_session(request)
    await check_csrf(request, session)
    return session


Viewer = Annotated[Session, Depends(require_session)]
Actor = Annotated[Session, Depends(require_acting)]
Admin = Annotated[Session, Depends(require_admin)]
