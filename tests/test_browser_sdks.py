"""The real browser SDKs, unchanged, in headless Chromium, configured only as their docs say plus our host:
Segment's analytics.js (``@segment/analytics-next``, ``cdnURL``) and RudderStack's v3 SDK
(``@rudderstack/analytics-js``, ``configUrl``). The page is served from another loopback origin, so CORS is
exercised as on a real site; the test then finds the events in the store with the SDK's library name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser import (
    RUDDERSTACK_ANALYTICS_JS,
    SEGMENT_ANALYTICS_NEXT,
    SEGMENT_ANALYTICS_NODE,
    browser_page,
    npm_package,
    static_site,
)
from tests.conftest import LiveServer

SEGMENT_PAGE = """<!doctype html><html><head><title>shop</title>
<script src="analytics-next.js"></script>
<script>
  // As Segment's npm docs say, with cdnURL pointed at the CDP (and nothing else).
  AnalyticsNext.AnalyticsBrowser.load({ writeKey: "%(write_key)s", cdnURL: "%(cdp)s" })
    .then(([analytics]) => Promise.all([
      analytics.identify("user-1", { email: "Ada@Example.com", first_name: "Ada" }),
      analytics.track("Order Completed", { revenue: 42.5, currency: "USD" }),
      analytics.page("Docs", "Getting started"),
    ]))
    .then(() => { window.sent = "ok"; }, (err) => { window.sent = "error: " + err; });
</script></head><body>shop</body></html>
"""

RUDDER_PAGE = """<!doctype html><html><head><title>shop</title>
<script src="rudderstack.js"></script>
<script>
  // As RudderStack's v3 docs say for the npm package: load(writeKey, dataPlaneUrl, { configUrl }).
  const analytics = new rudderanalytics.RudderAnalytics();
  analytics.load("%(write_key)s", "%(cdp)s", { configUrl: "%(cdp)s" });
  analytics.ready(() => { window.ready = true; });
  analytics.identify("user-2", { email: "Grace@Example.com", first_name: "Grace" });
  analytics.track("Order Completed", { revenue: 10, currency: "EUR" });
  analytics.page("Docs", "Getting started");
</script></head><body>shop</body></html>
"""


def _events(server: LiveServer, user_id: str, n: int, page: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """The user's stored events once there are ``n``. Waits through the page (not ``time.sleep``): Playwright
    hands the page's routed requests on only while its API is called."""
    deadline = time.monotonic() + timeout
    while True:
        rows = server.cdp.store.query("SELECT * FROM events WHERE user_id = ? ORDER BY id", (user_id,))
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        page.wait_for_timeout(100)


def _site(tmp_path: Path, page: str, bundle: Path, bundle_name: str, **values: str) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(bundle, root / bundle_name)
    (root / "index.html").write_text(page % values, encoding="utf-8")
    return root


def test_segment_analytics_next_with_cdn_url(server: LiveServer, write_key: str, tmp_path: Path) -> None:
    package = npm_package("@segment/analytics-next", SEGMENT_ANALYTICS_NEXT)
    root = _site(
        tmp_path, SEGMENT_PAGE, package / "dist/umd/index.js", "analytics-next.js", write_key=write_key, cdp=server.url
    )
    with static_site(root) as site, browser_page() as (page, outside):
        page.goto(f"{site}/index.html")
        page.wait_for_function("window.sent !== undefined", timeout=20_000)
        assert page.evaluate("window.sent") == "ok"
        rows = _events(server, "user-1", 3, page)
    assert outside == []
    assert sorted(r["type"] for r in rows) == ["identify", "page", "track"]
    by_type = {r["type"]: r for r in rows}
    assert json.loads(by_type["identify"]["traits"])["email"] == "ada@example.com"
    assert json.loads(by_type["track"]["properties"])["revenue"] == 42.5
    library = json.loads(by_type["track"]["context"])["library"]
    assert library["name"] == "analytics.js"
    assert SEGMENT_ANALYTICS_NEXT in library["version"]
    assert all(r["source"] == "web" for r in rows)


def test_rudderstack_v3_with_config_url(server: LiveServer, write_key: str, tmp_path: Path) -> None:
    package = npm_package("@rudderstack/analytics-js", RUDDERSTACK_ANALYTICS_JS)
    root = _site(
        tmp_path,
        RUDDER_PAGE,
        package / "dist/npm/modern/bundled/umd/index.js",
        "rudderstack.js",
        write_key=write_key,
        cdp=server.url,
    )
    with static_site(root) as site, browser_page() as (page, outside):
        page.goto(f"{site}/index.html")
        page.wait_for_function("window.ready === true", timeout=20_000)
        rows = _events(server, "user-2", 3, page)
    assert outside == []
    assert sorted(r["type"] for r in rows) == ["identify", "page", "track"]
    by_type = {r["type"]: r for r in rows}
    identify = by_type["identify"]
    traits = json.loads(identify["traits"] or "null") or json.loads(identify["context"])["traits"]
    assert traits["email"] == "grace@example.com"
    library = json.loads(by_type["track"]["context"])["library"]
    assert library["name"] == "RudderLabs JavaScript SDK"
    assert library["version"] == RUDDERSTACK_ANALYTICS_JS


@pytest.mark.parametrize("revoke", [False, True])
def test_browser_sdk_is_told_when_the_key_is_unknown(server: LiveServer, write_key: str, revoke: bool) -> None:
    """Settings for an unknown or revoked key: a JSON 404 a browser may read (CORS headers on it)."""
    key = write_key if revoke else "wk_unknown"
    if revoke:
        info = server.cdp.keys.lookup(write_key)
        assert info is not None
        server.cdp.keys.revoke(info.id)
    origin = {"Origin": "http://127.0.0.1:1"}
    with server.client() as client:
        for path in (f"/v1/projects/{key}/settings", f"/sourceConfig/?p=npm&v=3&writeKey={key}"):
            response = client.get(path, headers=origin)
            assert response.status_code == 404, path
            assert response.headers["access-control-allow-origin"] == "*"
            assert response.json()["code"] == "unknown_write_key"
        preflight = client.options(
            "/sourceConfig/",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


def test_sdk_settings_documents(server: LiveServer, write_key: str) -> None:
    with server.client() as client:
        segment = client.get(f"/v1/projects/{write_key}/settings").json()
        rudder = client.get("/sourceConfig", params={"writeKey": write_key}).json()
    host = server.url.removeprefix("http://")
    assert segment["integrations"]["Segment.io"] == {
        **segment["integrations"]["Segment.io"],
        "apiKey": write_key,
        "apiHost": f"{host}/v1",
        "protocol": "http",
    }
    assert segment["metrics"]["sampleRate"] == 0  # the SDK's own metrics would go to Segment
    assert rudder["source"]["enabled"] is True and rudder["source"]["destinations"] == []
    assert rudder["source"]["writeKey"] == write_key


NODE_SCRIPT = """
const { Analytics } = require("@segment/analytics-node");
const analytics = new Analytics({ writeKey: process.env.WRITE_KEY, host: process.env.CDP_URL, flushAt: 10 });
analytics.on("error", (err) => { console.error("error", err); process.exitCode = 1; });
analytics.identify({ userId: "user-3", traits: { email: "Alan@Example.org" } });
analytics.track({ userId: "user-3", event: "Order Completed", properties: { revenue: 7 } });
analytics.page({ userId: "user-3", name: "Docs" });
analytics.closeAndFlush().then(() => console.log("flushed"));
"""


def test_segment_analytics_node_with_host(server: LiveServer, write_key: str, tmp_path: Path) -> None:
    """Segment's Node.js SDK, configured as its docs say plus our ``host``, still works."""
    package = npm_package("@segment/analytics-node", SEGMENT_ANALYTICS_NODE)
    script = tmp_path / "send.js"
    script.write_text(NODE_SCRIPT, encoding="utf-8")
    node = shutil.which("node")
    assert node, "node is missing: `make test` installs npm (and node with it)"
    env = {"PATH": os.environ.get("PATH", ""), "NODE_PATH": str(package.parent.parent), "WRITE_KEY": write_key,
           "CDP_URL": server.url}  # fmt: skip
    result = subprocess.run([node, str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "flushed" in result.stdout, result.stderr
    rows = server.cdp.store.query("SELECT * FROM events WHERE user_id = 'user-3' ORDER BY id")
    assert sorted(r["type"] for r in rows) == ["identify", "page", "track"]
    library = json.loads(rows[0]["context"])["library"]
    assert library == {**library, "name": "@segment/analytics-node", "version": SEGMENT_ANALYTICS_NODE}
