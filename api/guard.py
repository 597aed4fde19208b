"""The gate every request passes before a route reads its body: authentication, a body-size limit, JSON limits,
and a JSON 500 (on a connection that stays open) for anything a route did not expect.

What each route needs is declared once, on the route:

- **scope**: taken from its dependencies. A route with ``AdminKey`` needs an admin token, one with ``ReadKey`` (or
  documented with ``openapi_extra={"security": TOKEN_SECURITY}``) a read token, one documented with the write-key
  scheme a write key (checked here when the request carries an ``Authorization`` header; the tracking API also
  accepts ``writeKey`` in the body). Anything else is public. ``openapi_extra=guard.rule(scope=...)`` overrides
  the inference; ``tests/test_auth_matrix.py`` holds the expected scope of every route.
- **body limit**: ``Settings.max_body_bytes`` (1 MB) unless the route says otherwise with
  ``openapi_extra=guard.rule(max_body=...)``: a number of bytes, or the name of the ``Settings`` field that holds
  it (the tracking and records routes: ``"max_batch_bytes"``, ``"max_records_bytes"``...).
- **raw body**: ``guard.rule(raw=True)`` on a route that reads its body itself (tracking, records: gzip, NDJSON,
  per-message limits). Its body is streamed to the route, not buffered nor checked here, and not rewritten by
  ``api.json_bodies``.

A request without the right key is answered 401/403 before one byte of its body is read; a body over the limit
is answered 413 as soon as its ``Content-Length`` (or its bytes so far) pass it. Bodies of the routes that do not
read their body raw are checked against ``cdp.jsonlimits`` (nesting depth, integers within 64 bits).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdp import check_json_body
from cdp.errors import CDPError, PayloadTooLarge

from .deps import credential, require_admin, require_read
from .json_bodies import read_body, replaying
from .schemas import TOKEN_SECURITY, WRITE_KEY_SECURITY

log = logging.getLogger("cdp.api")
Kind = Literal["public", "write", "read", "admin"]
SCOPE_KEY, BODY_KEY, RAW_KEY = "x-cdp-scope", "x-cdp-max-body", "x-cdp-raw-body"
POLICY = "cdp.policy"
"""The scope key under which the guard hands the matched route's :class:`Policy` to the middlewares inside it."""


def rule(*, scope: Kind | None = None, max_body: int | str | None = None, raw: bool = False) -> dict[str, Any]:
    """``openapi_extra`` entries that set a route's scope, body limit (bytes, or a ``Settings`` field's name)
    or raw body (merge with any other extras)."""
    out: dict[str, Any] = {}
    if scope is not None:
        out[SCOPE_KEY] = scope
    if max_body is not None:
        out[BODY_KEY] = max_body
    if raw:
        out[RAW_KEY] = True
    return out


@dataclass(frozen=True)
class Policy:
    scope: Kind
    max_body: int | str | None  # None: the default (Settings.max_body_bytes); a str: the Settings field holding it
    raw: bool  # the route reads its body itself (tracking, records): no buffering here

    def limit(self, settings: Any) -> int:
        """The body limit in bytes under ``settings``."""
        if self.max_body is None:
            return int(settings.max_body_bytes)
        if isinstance(self.max_body, str):
            return int(getattr(settings, self.max_body))
        return self.max_body


def api_routes(app: Any) -> list[APIRoute]:
    """Every FastAPI route of ``app``, through included routers (FastAPI keeps those as one route each)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # an older FastAPI: included routes are copied into the app's list
        return [route for route in app.routes if isinstance(route, APIRoute)]
    return [c.original_route for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def _dependency_calls(route: APIRoute) -> set[Any]:
    calls: set[Any] = set()
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        calls.add(dependant.call)
        stack.extend(dependant.dependencies)
    return calls


def policy_of(route: APIRoute) -> Policy:
    """The scope and body limit of one route (see the module's docstring)."""
    extra = route.openapi_extra or {}
    scope: Kind = "public"
    calls = _dependency_calls(route)
    if require_admin in calls:
        scope = "admin"
    elif require_read in calls or extra.get("security") == TOKEN_SECURITY:
        scope = "read"
    elif extra.get("security") == WRITE_KEY_SECURITY:
        scope = "write"
    scope = extra.get(SCOPE_KEY, scope)
    return Policy(scope, extra.get(BODY_KEY), bool(extra.get(RAW_KEY, False)))


def error(status: int, body: dict[str, Any], *, close: bool = False) -> tuple[Message, Message]:
    data = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="cdp"'))
    if close:
        headers.append((b"connection", b"close"))
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": data},
    )


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._static: dict[tuple[str, str], Policy] | None = None
        self._dynamic: list[tuple[APIRoute, Policy]] = []
        self._routes: list[APIRoute] = []

    def _table(self, scope: Scope) -> None:
        static: dict[tuple[str, str], Policy] = {}
        self._routes = api_routes(scope["app"])
        for route in self._routes:
            found = policy_of(route)
            if "{" in route.path:
                self._dynamic.append((route, found))
            else:
                for method in route.methods or ():
                    static[(method, route.path)] = found
        self._static = static

    def policy(self, scope: Scope) -> Policy | None:
        if self._static is None:
            self._table(scope)
        assert self._static is not None
        found = self._static.get((scope["method"], scope["path"]))
        if found is not None:
            return found
        for route, candidate in self._dynamic:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return candidate
        return None

    def methods_of(self, scope: Scope) -> list[str]:
        """Every method the documented path takes (sorted): the routes written for exactly this path when there
        are some (``/v1/segments/preview``), else those whose parameters match it (``/v1/segments/{key}``)."""
        path = scope["path"]
        exact = [route for route in self._routes if route.path == path]
        matching = exact or [route for route in self._routes if route.path_regex.match(path)]
        return sorted({method for route in matching for method in route.methods or ()})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._guarded(scope, receive, sending)
        except CDPError as exc:  # raised here or by a middleware between this and the routes
            if started:
                raise
            for message in error(exc.status, exc.to_dict(), close=exc.status == 413):
                await send(message)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # the answer was under way: the server closes the connection
            body = {
                "code": "internal_error",
                "message": "the server failed to answer this request; it was logged (nothing was stored "
                "unless the request was acknowledged)",
                "details": {},
            }
            for message in error(500, body):
                await send(message)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.policy(scope)
        if found is None:
            allowed = self.methods_of(scope)
            if not allowed or scope["method"] in allowed:  # 404 (or a route outside FastAPI's): the router answers
                await self.app(scope, receive, send)
                return
            # 405 with every method the path takes (Starlette's answer names only the first route's)
            refusal = {
                "code": "method_not_allowed",
                "message": f"{scope['method']} is not allowed on {scope['path']}; it takes {', '.join(allowed)}",
                "details": {"allowed": allowed},
            }
            start, end = error(405, refusal)
            start["headers"].append((b"allow", ", ".join(allowed).encode()))
            await send(start)
            await send(end)
            return
        cdp = scope["app"].state.cdp
        headers = dict(scope["headers"])
        has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers
        if found.scope in ("read", "admin") or (found.scope == "write" and b"authorization" in headers):
            secret = credential(Request(scope))
            try:
                # On the event loop, as the tracking routes do: a cached lookup (an indexed read on a miss); a
                # thread hop per request would cost the ingest path more than the check itself.
                cdp.keys.verify(secret, found.scope)
            except CDPError as exc:
                for message in error(exc.status, exc.to_dict(), close=has_body):
                    await send(message)
                return
        scope[POLICY] = found
        limit = found.limit(cdp.settings)
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(
                f"the body is larger than the {limit // 1024} KB allowed here", {"limit_bytes": limit}
            )
        if found.raw or not has_body:
            await self.app(scope, receive, send)
            return
        body, _ = await read_body(receive, limit)
        if len(body) > limit:
            raise PayloadTooLarge(
                f"the body is larger than the {limit // 1024} KB allowed here", {"limit_bytes": limit}
            )
        if body.strip():
            check_json_body(body)
        await self.app(scope, replaying(receive, body), send)
