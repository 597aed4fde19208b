"""Sign-in (a read or admin token pasted once) and sign-out.

The sign-in form is protected from login CSRF by a double-submit token: a random value in a short-lived
SameSite=Strict cookie that the form must echo. The token itself travels only in the POST body: never in a URL,
never in a log line (the access log writes paths only), never in the cookie (which names the key's id).
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cdp.errors import Forbidden, Unauthorized

from . import session
from .common import ConsoleRoute, cdp_of, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
PRE = "cdp_console_pre"


def _safe_next(value: str | None) -> str:
    """Only a path inside the console (no scheme, no host, no ``//``): an open redirect otherwise."""
    if not value or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console/people"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/console/people"


def _form_page(request: Request, next_url: str, error: str | None = None, status: int = 200) -> Response:
    pre = secrets.token_urlsafe(16)
    response = render(request, "sign_in.html", status=status, pre=pre, next=next_url, error=error)
    response.set_cookie(PRE, pre, max_age=900, httponly=True, samesite="strict", secure=_secure(request))
    return response


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/console/sign-in")
def sign_in_form(request: Request, next: str | None = None) -> Response:
    if session.current(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _form_page(request, _safe_next(next))


@router.post("/console/sign-in")
async def sign_in(request: Request) -> Response:
    form = await session.form(request)
    next_url = _safe_next(form.get("next"))
    pre = request.cookies.get(PRE, "")
    if not pre or not hmac.compare_digest(pre, form.get(session.CSRF_FIELD, "")):
        return _form_page(request, next_url, "The form expired: paste the token again.", status=403)
    token = form.get("token", "").strip()
    if not token:
        return _form_page(request, next_url, "Paste a read or admin token.", status=400)
    try:
        info = cdp_of(request).keys.verify(token, "read")
    except Unauthorized:
        return _form_page(request, next_url, "This token is unknown or revoked.", status=401)
    except Forbidden:
        return _form_page(
            request, next_url, "A write key only sends events: sign in with a read or admin token.", status=403
        )
    value, ttl = session.new_cookie(request, info.id)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        session.COOKIE,
        value,
        max_age=ttl,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/console",
    )
    response.delete_cookie(PRE)
    return response


@router.post("/console/sign-out")
async def sign_out(request: Request, current: session.Actor) -> Response:
    session.revoked(request).add(current.nonce)
    response = RedirectResponse("/console/sign-in?signed_out=1", status_code=303)
    response.delete_cookie(session.COOKIE, path="/console", httponly=True, samesite="strict")
    return response


@router.get("/console")
def home(request: Request, _session: session.Viewer) -> Response:
    return RedirectResponse("/console/people", status_code=303)
