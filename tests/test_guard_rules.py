"""Each route declares what the guard does with its body (``guard.rule(scope=, max_body=, raw=)``): no path list.

A raw route (tracking, records) gets its body streamed to it untouched, under the limit it names; every other
route's body is buffered and checked (size, JSON nesting) before the route runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Request

from api import create_app
from api.guard import Policy, api_routes, policy_of, rule
from api.routes.tracking import TRACKING_PATHS
from cdp import CDP
from tests.conftest import free_port


def test_raw_routes_are_the_ones_that_declare_it(fresh_db: CDP) -> None:
    app = create_app(cdp=fresh_db, scheduler=False)
    policies = {route.path: policy_of(route) for route in api_routes(app)}
    raw = {path for path, policy in policies.items() if policy.raw}
    assert raw == {*TRACKING_PATHS, "/v1/records"}
    settings = fresh_db.settings
    assert policies["/v1/batch"].limit(settings) == settings.max_batch_bytes
    assert policies["/v1/b"].limit(settings) == settings.max_batch_bytes
    assert policies["/v1/track"].limit(settings) == settings.max_message_bytes
    assert policies["/v1/records"].limit(settings) == settings.max_records_bytes
    assert policies["/v1/segments"].limit(settings) == settings.max_body_bytes
    assert Policy("public", 123, False).limit(settings) == 123


def test_rule_merges_into_openapi_extra() -> None:
    assert rule() == {}
    assert rule(scope="admin", max_body=10, raw=True) == {
        "x-cdp-scope": "admin",
        "x-cdp-max-body": 10,
        "x-cdp-raw-body": True,
    }


@pytest.fixture
def custom(fresh_db: CDP) -> Iterator[str]:
    """The real app plus two public routes that echo what reached them: one raw, one buffered (256-byte limits)."""
    app = create_app(cdp=fresh_db, scheduler=False)

    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"content_type": request.headers.get("content-type"), "body": body.decode("latin-1")}

    app.router.add_api_route(
        "/test/raw", echo, methods=["POST"], openapi_extra=rule(scope="public", raw=True, max_body=256)
    )
    app.router.add_api_route("/test/buffered", echo, methods=["POST"], openapi_extra=rule(scope="public", max_body=256))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_a_declared_raw_route_gets_its_body_untouched(custom: str) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=custom, timeout=10) as http:
        # A JSON body sent as a form: the buffered route sees it as JSON (api.json_bodies), the raw one as sent.
        raw = http.post("/test/raw", content=b'{"a": 1}', headers=form)
        assert raw.status_code == 200
        assert raw.json() == {"content_type": "application/x-www-form-urlencoded", "body": '{"a": 1}'}
        buffered = http.post("/test/buffered", content=b'{"a": 1}', headers=form)
        assert buffered.json()["content_type"] == "application/json"
        # The raw route's body is not checked here: the nesting the buffered route refuses reaches it.
        deep = b"[" * 70 + b"]" * 70
        assert http.post("/test/raw", content=deep).json()["body"] == deep.decode()
        refused = http.post("/test/buffered", content=deep)
        assert refused.status_code == 400 and refused.json()["code"] == "nesting_too_deep"
        # Both limits are the declared 256 bytes, whether the length is announced or streamed.
        for path in ("/test/raw", "/test/buffered"):
            assert http.post(path, content=b"x" * 256).status_code == 200
            over = http.post(path, content=b"x" * 257)
            assert over.status_code == 413, path
            assert over.json()["details"] == {"limit_bytes": 256}
        streamed = http.post("/test/buffered", content=iter([b"x" * 200, b"x" * 200]))
        assert streamed.status_code == 413
