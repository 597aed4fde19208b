"""Every route by {no key, bogus, write, read, admin, revoked}: exactly the expected class of answer.

The routes come from the application's route table; ``SCOPES`` is the decision for each. A new route without a
decision here fails ``test_every_route_has_a_decision`` (add it with the scope it needs: public, write, read or
admin), and the guard's own reading of the route must agree with the decision.
"""

from __future__ import annotations

import re

import httpx
import pytest

from api.guard import api_routes, policy_of
from cdp import CDP
from tests.conftest import LiveServer

SCOPES: dict[tuple[str, str], str] = {
    ("GET", "/"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/redoc"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/v1/projects/{write_key}/settings"): "public",
    ("GET", "/sourceConfig/"): "public",
    ("GET", "/sourceConfig"): "public",
    ("GET", "/v1/segments/schema"): "public",
    **{("POST", f"/v1/{kind}"): "write" for kind in ("track", "identify", "page", "screen", "group", "alias", "batch")},
    **{("POST", f"/v1/{short}"): "write" for short in "tipsgab"},
    ("POST", "/v1/records"): "write",
    ("GET", "/v1/events"): "read",
    ("GET", "/v1/profiles"): "read",
    ("GET", "/v1/profiles/lookup"): "read",
    ("GET", "/v1/profiles/{profile_id}"): "read",
    ("GET", "/v1/profiles/{profile_id}/events"): "read",
    ("GET", "/v1/profiles/{profile_id}/identities"): "read",
    ("GET", "/v1/profiles/{profile_id}/explain"): "read",
    ("GET", "/v1/profiles/{profile_id}/merges"): "read",
    ("GET", "/v1/profiles/{profile_id}/segments"): "read",
    ("GET", "/v1/identity/model"): "read",
    ("GET", "/v1/identity/conflicts"): "read",
    ("POST", "/v1/segments"): "admin",
    ("POST", "/v1/segments/preview"): "read",
    ("GET", "/v1/segments"): "read",
    ("GET", "/v1/segments/{key}"): "read",
    ("PUT", "/v1/segments/{key}"): "admin",
    ("DELETE", "/v1/segments/{key}"): "admin",
    ("GET", "/v1/segments/{key}/members"): "read",
    ("POST", "/v1/segments/{key}/compute"): "admin",
    ("GET", "/v1/segments/{key}/history"): "read",
    ("GET", "/v1/segments/{key}/model"): "read",
    ("GET", "/v1/segments/{key}/plot.png"): "read",
    ("GET", "/v1/personas"): "read",
    ("GET", "/v1/personas/labels"): "read",
    ("POST", "/v1/personas/labels"): "admin",
    ("GET", "/v1/personas/uncertain"): "read",
    ("POST", "/v1/personas/predict"): "read",
    ("POST", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}"): "admin",
    ("PATCH", "/v1/webhooks/{webhook_id}"): "admin",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "admin",
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): "admin",
    ("POST", "/v1/webhooks/{webhook_id}/test"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "admin",
    ("POST", "/v1/webhooks/{webhook_id}/replay"): "admin",
    ("GET", "/v1/quality"): "read",
    ("GET", "/v1/identity/labels"): "read",
    ("GET", "/v1/identity/quality"): "read",
    ("GET", "/v1/identity/review"): "read",
    ("GET", "/v1/identity/review/{item_id}"): "read",
    ("GET", "/v1/privacy/requests"): "admin",
    ("GET", "/v1/privacy/requests/{request_id}"): "admin",
    ("GET", "/v1/privacy/requests/{request_id}/download"): "admin",
    ("GET", "/v1/profiles/{profile_id}/consent"): "read",
    ("GET", "/v1/segments/{key}/history.png"): "read",
    ("GET", "/v1/segments/{key}/history.svg"): "read",
    ("GET", "/v1/segments/{key}/plot.svg"): "read",
    ("GET", "/v1/segments/{key}/profiles.png"): "read",
    ("GET", "/v1/segments/{key}/profiles.svg"): "read",
    ("POST", "/v1/identity/review/{item_id}"): "admin",
    ("POST", "/v1/privacy/requests"): "admin",
    ("POST", "/v1/profiles/{profile_id}/merge"): "admin",
    ("POST", "/v1/profiles/{profile_id}/split"): "admin",
    ("POST", "/v1/profiles/{profile_id}/undo"): "admin",
    # The console's pages check its own signed session cookie (tests/test_console_security.py): a key or
    # token never opens one. To the guard, which reads keys and tokens, they are public.
    ("GET", "/console"): "console",
    ("GET", "/console/events"): "console",
    ("GET", "/console/events/fragment"): "console",
    ("GET", "/console/identity"): "console",
    ("GET", "/console/identity/review"): "console",
    ("GET", "/console/people"): "console",
    ("GET", "/console/people/{profile_id}"): "console",
    ("GET", "/console/privacy"): "console",
    ("GET", "/console/privacy/{request_id}/download"): "console",
    ("GET", "/console/quality"): "console",
    ("GET", "/console/quality/samples"): "console",
    ("GET", "/console/segments"): "console",
    ("GET", "/console/segments/new"): "console",
    ("GET", "/console/segments/{key}"): "console",
    ("GET", "/console/segments/{key}/edit"): "console",
    ("GET", "/console/sign-in"): "public",
    ("GET", "/console/webhooks"): "console",
    ("GET", "/console/webhooks/{webhook_id}"): "console",
    ("POST", "/console/identity/review/{item_id}"): "console",
    ("POST", "/console/people/{profile_id}/merge"): "console",
    ("POST", "/console/people/{profile_id}/split"): "console",
    ("POST", "/console/people/{profile_id}/undo"): "console",
    ("POST", "/console/privacy"): "console",
    ("POST", "/console/privacy/confirm"): "console",
    ("POST", "/console/segments/builder"): "console",
    ("POST", "/console/segments/preview"): "console",
    ("POST", "/console/segments/{key}/compute"): "console",
    ("POST", "/console/sign-in"): "console",  # a form: refused without its CSRF token
    ("POST", "/console/sign-out"): "console",
    ("POST", "/console/webhooks"): "console",
    ("POST", "/console/webhooks/{webhook_id}/enabled"): "console",
    ("POST", "/console/webhooks/{webhook_id}/replay"): "console",
    ("POST", "/console/webhooks/{webhook_id}/rotate"): "console",
    ("POST", "/console/webhooks/{webhook_id}/test"): "console",
}
# Who may call a route of each scope (admin implies read and may ingest).
ALLOWED = {
    "public": {"none", "bogus", "write", "read", "admin", "revoked"},
    "write": {"write", "admin"},
    "read": {"read", "admin"},
    "admin": {"admin"},
    "console": set(),
}
GUARD_READS = {"console": "public"}  # how the guard reads a scope it does not enforce itself
CALLERS = ("none", "bogus", "write", "read", "admin", "revoked")


def table(cdp: CDP) -> dict[tuple[str, str], str]:
    from api import create_app

    app = create_app(cdp=cdp, scheduler=False)
    return {(method, route.path): policy_of(route).scope for route in api_routes(app) for method in route.methods or ()}


def test_every_route_has_a_decision(fresh_db: CDP) -> None:
    routes = table(fresh_db)
    assert sorted(set(routes) - set(SCOPES)) == [], "new routes: add each to SCOPES with the scope it needs"
    assert sorted(set(SCOPES) - set(routes)) == [], "routes that no longer exist: remove them from SCOPES"
    differ = {k: v for k, v in routes.items() if GUARD_READS.get(SCOPES[k], SCOPES[k]) != v}
    assert differ == {}, "the guard reads these routes differently"


def expected(scope: str, caller: str) -> set[int] | None:
    """The statuses a caller may get: None means 'anything but 401, 403 and 5xx' (the route ran)."""
    if caller in ALLOWED[scope]:
        return None
    if scope == "console":  # no session cookie: sign in first (a page's GET may redirect to the sign-in form)
        return {401, 403, 303}
    if caller in ("none", "bogus", "revoked"):
        return {401}
    return {403}


def test_auth_matrix(server: LiveServer, write_key: str, read_key: str, admin_key: str) -> None:
    revoked_info, revoked = server.cdp.keys.create("admin", "gone")
    server.cdp.keys.revoke(revoked_info.id)
    secrets = {
        "none": None,
        "bogus": "ak_" + "x" * 32,
        "write": write_key,
        "read": read_key,
        "admin": admin_key,
        "revoked": revoked,
    }
    wrong: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for (method, path), scope in sorted(SCOPES.items()):
            url = re.sub(r"\{(\w+)\}", lambda m: {"write_key": write_key}.get(m[1], "x1"), path)
            for caller in CALLERS:
                secret = secrets[caller]
                headers = {"Authorization": f"Bearer {secret}"} if secret else {}
                body = b"{}" if method in ("POST", "PUT", "PATCH") else None
                answer = client.request(method, url, headers=headers, content=body)
                allowed = expected(scope, caller)
                ok = (
                    answer.status_code not in (401, 403) and answer.status_code < 500
                    if allowed is None
                    else answer.status_code in allowed
                )
                if answer.status_code >= 400 and "json" in answer.headers.get("content-type", ""):
                    ok = ok and {"code", "message"} <= set(answer.json())
                if not ok:
                    wrong.append(f"{method} {path} as {caller}: {answer.status_code} {answer.text[:120]}")
    assert wrong == []


@pytest.mark.parametrize("caller", ["none", "bogus", "write"])
def test_refused_callers_never_reach_an_admin_route_body(server: LiveServer, write_key: str, caller: str) -> None:
    """A refused caller gets its 401/403 even when its body is broken JSON (the body is never read)."""
    secret = {"none": None, "bogus": "nope", "write": write_key}[caller]
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    answer = httpx.post(f"{server.url}/v1/segments", content=b"{not json", headers=headers, timeout=30)
    assert answer.status_code == (403 if caller == "write" else 401)
