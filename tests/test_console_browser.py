"""The console in a real browser (Debian's Chromium via Playwright) on the sample data: the journeys a user takes,
asserting on what is visible, with screenshots of each step, and an axe-core accessibility pass on every main page.

Screenshots go to a temporary folder (``CDP_CONSOLE_SCREENSHOTS`` names another, e.g. to refresh the README's).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api import create_app
from cdp import CDP, Settings
from cdp.sample import load
from tests.browser import browser_page, npm_package
from tests.conftest import LiveServer, free_port

AXE_CORE = "4.10.3"


@dataclass
class Console:
    server: LiveServer
    admin: str
    read: str
    shots: Path
    receiver: str
    received: list[dict[str, Any]]


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The sample data, resolved, behind a live server with the webhook dispatcher running; a local receiver."""
    folder = tmp_path_factory.mktemp("console")
    settings = Settings(
        db=folder / "cdp.db",
        scheduler_enabled=False,
        key_cache_seconds=0,
        ingest_writer="thread",
        webhooks_allow_private_urls=True,
    )
    cdp = CDP(settings)
    load(cdp)
    cdp.identity.run()
    admin, read = cdp.keys.create("admin", "console admin")[1], cdp.keys.create("read", "marketing")[1]
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    cdp.webhooks.start()
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(cdp=cdp, scheduler=False), port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    shots = Path(os.environ.get("CDP_CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("console-screens"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield Console(
            LiveServer(f"http://127.0.0.1:{port}", cdp),
            admin,
            read,
            shots,
            f"http://127.0.0.1:{receiver.server_address[1]}/hook",
            received,
        )
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        receiver.shutdown()
        receiver.server_close()
        cdp.close()


def misspelled(cdp: CDP) -> tuple[str, str, str]:
    """A profile with events whose first name one source misspells, with a Splink match holding it together:
    (profile id, the misspelled full name, the chosen full name)."""
    for person in cdp.profiles.search(limit=1000).data:
        if not cdp.profiles.events(person["id"], limit=1).data:
            continue
        explain = cdp.profiles.explain(person["id"])
        if not any(e["kind"] == "probabilistic" for e in explain["edges"]):
            continue
        traits = {t["trait"]: t for t in cdp.lineage.traits(person["id"])}
        first, last = traits.get("first_name"), traits.get("last_name")
        if not first or not last:
            continue
        crm = {r["source"] for r in cdp.lineage.records(person["id"])}
        for other in first["others"]:
            typo = str(other["value"])
            if other["source"] not in crm:  # a CRM record's spelling (search reads records and unified traits)
                continue
            if typo.lower() != str(first["value"]).lower() and not str(first["value"]).lower().startswith(typo.lower()):
                return person["id"], f"{typo} {last['value']}", f"{first['value']} {last['value']}"
    raise AssertionError("the sample data has no misspelled, fuzzily matched person")


def sign_in(page: Any, console: Console, token: str) -> None:
    page.goto(console.server.url + "/")
    assert page.get_by_role("heading", name="Sign in to the cdp console").is_visible()
    page.get_by_label("API token (read or admin)").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/people$"))


def nav(page: Any, section: str) -> None:
    page.get_by_role("navigation", name="Console sections").get_by_role("link", name=section).click()


def shot(page: Any, console: Console, name: str) -> None:
    path = console.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000


def test_find_a_person_by_a_misspelled_name_then_timeline_and_explain(console: Console) -> None:
    pid, typo, name = misspelled(console.server.cdp)
    with browser_page() as (page, outside):
        sign_in(page, console, console.read)
        shot(page, console, "people")
        page.get_by_label(re.compile("Search by name")).fill(typo)
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r"q="))
        shot(page, console, "people-search")
        page.get_by_role("link", name=name).first.click()
        page.wait_for_url(re.compile(f"/console/people/{pid}"))
        assert page.get_by_role("heading", level=1).inner_text() == name
        traits = page.locator("#traits")
        assert typo.split(" ")[0] in traits.inner_text()  # the other source's spelling, beside the chosen one
        assert page.locator("#records table").inner_text().count(name.split(" ")[1]) >= 2
        shot(page, console, "person")
        # Timeline: filter by an event this person has.
        rows = page.locator("#timeline tbody tr")
        first_event = rows.first.locator("td").nth(2).inner_text()
        assert first_event
        page.get_by_label("Event", exact=True).fill(first_event)
        page.locator("#timeline").get_by_role("button", name="Filter").click()
        page.wait_for_url(re.compile("event="))
        cells = page.locator("#timeline tbody tr td:nth-child(3)").all_inner_texts()
        assert cells and set(cells) == {first_event}
        # Explain: the picture, and a Splink match's waterfall one click away.
        picture = page.locator("#explain figure svg").first
        assert "Splink matches" in (picture.get_attribute("aria-label") or "")
        page.locator("#explain svg a").first.click()
        waterfall = page.locator("figure.waterfall").first
        assert "match weight" in waterfall.inner_text()
        assert "prior" in (waterfall.locator("svg").get_attribute("aria-label") or "")
        page.locator("#explain").screenshot(path=str(console.shots / "explain.png"))
        assert not [u for u in outside if not u.startswith("console.")], outside


def test_build_preview_save_compute_and_see_it_on_the_person_page_with_a_webhook(console: Console) -> None:
    pid, _, name = misspelled(console.server.cdp)
    last = name.split(" ")[1]
    with browser_page() as (page, outside):
        sign_in(page, console, console.admin)
        # A webhook to a local receiver first, so the segment's entries are delivered.
        nav(page, "Webhooks")
        page.get_by_label("URL").fill(console.receiver)
        page.get_by_label("Description").fill("journey receiver")
        page.get_by_role("button", name="Create endpoint").click()
        assert page.get_by_text("Signing secret (shown once").is_visible()
        assert page.locator("#secret").inner_text().startswith("whsec_")
        hook_url = f"{console.server.url}/console/webhooks/{page.locator('h1 code').inner_text()}"
        page.get_by_role("button", name="Send test ping").click()
        assert page.get_by_text("Ping sent: succeeded.").is_visible()
        assert any(m.get("type") == "ping" for m in console.received)
        # The builder: key and name in the JSON, a trait condition from the form, preview, save, compute.
        nav(page, "Segments")
        page.get_by_role("link", name="New segment").click()
        key = f"family_{last.lower()}"
        page.get_by_label(re.compile("^Definition")).fill(json.dumps({"key": key, "name": f"The {last} family"}))
        page.get_by_label("Kind").select_option("trait")
        page.get_by_label("Trait", exact=True).fill("last_name")
        page.get_by_label("Operator").select_option("eq")
        page.get_by_label("Value").fill(last)
        page.get_by_role("button", name="Add condition").click()
        size = int(page.locator("#preview [data-size]").inner_text())
        assert size >= 1
        assert page.locator("#preview").get_by_role("link", name=name).count() + size >= 1
        page.locator("#preview summary").click()
        assert "SELECT" in page.locator("#preview pre").first.inner_text()
        assert last in page.locator("#preview pre").nth(1).inner_text()  # parameters, never pasted into the SQL
        shot(page, console, "builder")
        # Live preview as one types: a rule nobody matches shows 0 without pressing anything.
        text = page.get_by_label(re.compile("^Definition")).input_value()
        page.get_by_label(re.compile("^Definition")).fill(text.replace(f'"{last}"', '"NobodyHasThisName"'))
        page.locator('#preview [data-size="0"]').wait_for(timeout=15000)
        page.get_by_label(re.compile("^Definition")).fill(text)
        page.get_by_role("button", name="Save segment").click()
        page.wait_for_url(re.compile(f"/console/segments/{key}"))
        assert page.get_by_text("Segment saved.").is_visible()
        page.get_by_role("button", name="Compute now").click()
        assert page.get_by_text("Computed (run").is_visible()
        assert page.locator("p.meta strong").inner_text() == str(size)
        assert page.get_by_role("link", name=name).count() >= 1
        shot(page, console, "segment")
        # On the person's page, with the time they entered.
        page.goto(f"{console.server.url}/console/people/{pid}")
        assert page.locator("#identifiers").get_by_role("link", name=f"The {last} family").is_visible()
        # The list shows it with its size and sparkline.
        nav(page, "Segments")
        row = page.get_by_role("row").filter(has_text=f"The {last} family")
        assert str(size) in row.inner_text() and row.locator("svg[role=img]").count() == 1
        shot(page, console, "segments")
        # Its entries reached the receiver, and the webhook page shows the delivery and its attempt.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(m["type"] == "segment.entered" for m in console.received):
            time.sleep(0.2)
        assert any(m["type"] == "segment.entered" and m["data"]["segment"]["key"] == key for m in console.received)
        page.goto(hook_url)
        deliveries = page.locator("table").last.inner_text()
        assert "segment.entered" in deliveries and "HTTP 200" in deliveries and "succeeded" in deliveries
        shot(page, console, "webhook")
        # Sign out, and be refused.
        page.get_by_role("button", name="Sign out").click()
        assert page.get_by_text("You are signed out.").is_visible()
        page.goto(f"{console.server.url}/console/people/{pid}")
        assert page.get_by_role("heading", name="Sign in to the cdp console").is_visible()
        assert name not in page.content()
        assert not [u for u in outside if not u.startswith("console.")], outside


def test_live_events_refresh_by_themselves(console: Console) -> None:
    write = console.server.cdp.keys.create("write", "live")[1]
    with browser_page() as (page, _outside):
        sign_in(page, console, console.read)
        nav(page, "Live events")
        assert page.locator("#event-rows tr").count() >= 10
        shot(page, console, "events")
        console.server.cdp.ingest.message(
            "track", {"userId": "live-user", "event": "Console Live Check"}, write_key=write
        )
        page.get_by_text("Console Live Check").wait_for(timeout=15000)
        page.get_by_label("Event name").fill("Console Live Check")
        page.get_by_role("button", name="Filter").click()
        assert page.locator("#event-rows tr").count() == 1


def test_every_main_page_passes_axe_core(console: Console) -> None:
    axe = npm_package("axe-core", AXE_CORE) / "axe.min.js"
    cdp = console.server.cdp
    pid = misspelled(cdp)[0]
    cdp.segments.create({"key": "axe_buyers", "name": "Buyers", "rule": {"event": "Order Completed"}})
    cdp.segments.compute("axe_buyers")
    pages = [
        "/console/people",
        f"/console/people/{pid}",
        "/console/segments",
        "/console/segments/axe_buyers",
        "/console/segments/new",
        "/console/events",
        "/console/webhooks",
        "/console/quality",
        "/console/identity",
    ]
    with browser_page() as (page, _outside):
        page.goto(console.server.url + "/console/sign-in")
        found = _serious(page, axe)
        sign_in(page, console, console.admin)
        for path in pages:
            page.goto(console.server.url + path)
            found += [f"{path}: {v}" for v in _serious(page, axe)]
            if path in ("/console/quality", "/console/identity"):
                shot(page, console, path.rsplit("/", 1)[1])
        # Keyboard: the skip link is the first stop and moves focus to the content.
        page.goto(console.server.url + "/console/people")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert found == []


def _serious(page: Any, axe: Path) -> list[str]:
    page.evaluate(axe.read_text(encoding="utf-8"))  # through DevTools: the page's CSP forbids inline scripts
    result = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]
