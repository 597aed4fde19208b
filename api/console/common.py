"""What every console view shares: the Jinja2 environment (autoescaping on), rendering with the session and its
CSRF token, a route class that shows errors as pages, and the sign-in redirect."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from cdp import CDP, record_key
from cdp.errors import CDPError

from . import session

HERE = Path(__file__).resolve().parent
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode()


def _when(value: Any) -> str:
    """An ISO time shortened for tables: ``2026-11-01 12:30:05Z``."""
    text = str(value or "")
    return text.replace("T", " ")[:19] + ("Z" if text.endswith("Z") or "+00:00" in text else "") if text else ""


TEMPLATES.filters["json"] = _json
TEMPLATES.filters["when"] = _when
TEMPLATES.globals["record_key"] = record_key
TEMPLATES.filters["q"] = lambda value: quote(str(value), safe="")
TEMPLATES.globals["qs"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v not in (None, "")})

NAV = [
    ("people", "People", "/console/people"),
    ("segments", "Segments", "/console/segments"),
    ("events", "Live events", "/console/events"),
    ("identity", "Identity", "/console/identity"),
    ("webhooks", "Webhooks", "/console/webhooks"),
    ("quality", "Quality", "/console/quality"),
]
# Pages of capabilities that landed after the console's first sections (listed after Identity).
IDENTITY_PAGES = [
    ("review", "Review queue", "/console/identity/review"),
    ("privacy", "Privacy requests", "/console/privacy"),
]


def cdp_of(request: Request) -> CDP:
    cdp: CDP = request.app.state.cdp
    return cdp


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    current: session.Session | None = getattr(request.state, "console_session", None)
    html = TEMPLATES.get_template(template).render(
        request=request,
        session=current,
        csrf=current.csrf if current else "",
        nav=NAV,
        identity_pages=IDENTITY_PAGES,
        **context,
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self';"
            " script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def fragment(html: str | Markup) -> HTMLResponse:
    return HTMLResponse(str(html), headers={"Cache-Control": "no-store"})


def wants_page(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "") and not is_fragment(request)


def is_fragment(request: Request) -> bool:
    return request.headers.get("x-console-fragment") == "1" or request.url.path.endswith("/fragment")


def sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/sign-in?{urlencode({'next': target})}", status_code=303)


class ConsoleRoute(APIRoute):
    """Each answer says its server time (``Server-Timing: app;dur=<ms>``, read by ``bench/console.py``).

    Errors inside the console: a navigation without a session goes to the sign-in form; other errors of a page
    render as a page with the message; fragments and posts from scripts get the JSON error body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            started = time.perf_counter()
            response = await answer(request)
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
            return response

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except session.SignInRequired:
                if wants_page(request) or (request.method == "POST" and not is_fragment(request)):
                    return sign_in_redirect(request)
                raise
            except CDPError as exc:
                if is_fragment(request) or "text/html" not in request.headers.get("accept", ""):
                    return JSONResponse(exc.to_dict(), status_code=exc.status)
                request.state.console_session = session.current(request)
                return render(request, "error.html", status=exc.status, error=exc)

        return guarded
