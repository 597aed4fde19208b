"""``/docs`` and ``/redoc`` offline, in a real browser that may reach loopback only, and the security
schemes of ``/openapi.json`` that make Authorize and Try-it-out work."""

from __future__ import annotations

from tests.browser import browser_page
from tests.conftest import LiveServer

PUBLIC = {
    ("/healthz", "get"),
    ("/v1/projects/{write_key}/settings", "get"),
    ("/sourceConfig/", "get"),
    ("/v1/segments/schema", "get"),
}


def test_openapi_declares_who_may_call_each_route(server: LiveServer) -> None:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["WriteKey"] == {**schemes["WriteKey"], "type": "http", "scheme": "basic"}
    assert schemes["Token"] == {**schemes["Token"], "type": "http", "scheme": "bearer"}
    operations = {(path, method): op for path, item in document["paths"].items() for method, op in item.items()}
    assert {k for k, op in operations.items() if not op.get("security")} == PUBLIC
    assert operations[("/v1/track", "post")]["security"] == [{"WriteKey": []}]
    assert operations[("/v1/records", "post")]["security"] == [{"WriteKey": []}]
    assert operations[("/v1/segments", "post")]["security"] == [{"Token": []}]
    assert operations[("/v1/profiles/{profile_id}/segments", "get")]["security"] == [{"Token": []}]
    assert operations[("/v1/privacy/requests", "post")]["security"] == [{"Token": []}]


def test_swagger_ui_offline_authorizes_and_executes(server: LiveServer, read_key: str) -> None:
    with browser_page() as (page, outside):
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() >= 40
        page.click("button.authorize")
        token = page.locator(".auth-container", has_text="Token")
        token.locator("input").fill(read_key)
        token.locator("button.authorize").click()
        page.click("button.btn-done")
        operation = page.locator(".opblock-get", has=page.locator('[data-path="/v1/segments"]')).first
        operation.locator(".opblock-summary").click()
        try_it = operation.locator("button.try-out__btn")
        if try_it.count() and "Cancel" not in try_it.inner_text():
            try_it.click()
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for(timeout=10_000)
        assert status.inner_text().strip().startswith("200")
        assert f"Bearer {read_key}" in operation.locator(".curl-command").inner_text()
    assert outside == []


def test_redoc_offline(server: LiveServer) -> None:
    with browser_page() as (page, outside):
        page.goto(f"{server.url}/redoc")
        page.locator("h2", has_text="Upsert CRM records").first.wait_for(timeout=20_000)
    # ReDoc's "API docs by Redocly" badge asks a CDN for its logo; the page's Content-Security-Policy refuses
    # it before any request is made (the badge hides a logo that failed).
    assert [u for u in outside if "cdn.redoc.ly/redoc/logo-mini.svg" not in u] == []
