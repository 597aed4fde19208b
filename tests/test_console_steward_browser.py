"""Stewardship and privacy pages in a real browser (Debian's Chromium via Playwright) on the sample data: the
review queue (filters, match / no match, read sessions without buttons), manual merge found by search, split
and undo on the person page, a privacy erasure through its confirmation step and an export's download, with
screenshots of each and an axe-core pass on every new page.

Screenshots go to a temporary folder (``CDP_CONSOLE_SCREENSHOTS`` names another, e.g. to refresh the README's).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from api.console.stewardship import CANDIDATES
from cdp import CDP
from tests.browser import browser_page, npm_package
from tests.test_console_browser import (  # noqa: F401  (console is the module's fixture)
    AXE_CORE,
    Console,
    _serious,
    console,
    nav,
    shot,
    sign_in,
)


def _people_with_records(cdp: CDP, avoid: set[str], n: int) -> list[dict[str, Any]]:
    """``n`` named profiles with one CRM record each and an email, none of them in ``avoid``."""
    out: list[dict[str, Any]] = []
    for person in cdp.profiles.search(limit=400).data:
        traits = person["traits"]
        if person["id"] in avoid or not traits.get("first_name") or not traits.get("last_name"):
            continue
        if not any(i["type"] == "email" for i in person["identifiers"]):
            continue
        if len(cdp.lineage.records(person["id"])) != 1:
            continue
        if any(traits.get("last_name") == p["traits"]["last_name"] for p in out):
            continue
        out.append(person)
        if len(out) == n:
            return out
    raise AssertionError("the sample data has too few named people with one CRM record")


def _in_review(cdp: CDP) -> set[str]:
    ids: set[str] = set()
    for status in ("open", "skipped", "decided"):
        for item in cdp.review.page(status=status, limit=1000).data:
            ids |= {s["profile"]["id"] for s in (item["left"], item["right"]) if s["profile"]}
    return ids


def _email(person: dict[str, Any]) -> str:
    return next(i["value"] for i in person["identifiers"] if i["type"] == "email")


def _wait_status(cdp: CDP, request_id: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = str(cdp.privacy.get(request_id)["status"])
        if status in ("done", "failed"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"privacy request {request_id} did not finish")


def test_sign_in_page(console: Console) -> None:  # noqa: F811
    with browser_page() as (page, outside):
        page.goto(console.server.url + "/")
        assert page.get_by_role("heading", name="Sign in to the cdp console").is_visible()
        assert page.get_by_label("API token (read or admin)").is_visible()
        shot(page, console, "sign-in")
        assert not outside


def test_review_queue_filters_and_decisions(console: Console) -> None:  # noqa: F811
    cdp = console.server.cdp
    items = cdp.review.page(limit=1000).data
    assert len(items) > 10, "the sample data should leave doubtful pairs after `cdp resolve`"
    source = next(s["source"] for i in items for s in (i["left"], i["right"]) if s["node"].startswith("record:"))
    with browser_page() as (page, outside):
        # A read session sees the pairs, not the buttons.
        sign_in(page, console, console.read)
        nav(page, "Review queue")
        assert page.get_by_role("heading", level=1).inner_text() == "Review queue"
        assert page.locator("article.review").count() >= 3
        assert page.get_by_role("button", name="Match", exact=True).count() == 0
        assert page.get_by_text("you can look, not decide").is_visible()
        # Ten pairs a page; the next page goes on where it stopped.
        assert page.locator("article.review").count() == 10
        page.get_by_role("link", name="More pairs").click()
        assert f"Pair {items[10]['id']}:" in page.locator("article.review h2").first.inner_text()
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, console, console.admin)
        nav(page, "Review queue")
        first = page.locator("article.review").first
        top = items[0]
        assert f"Pair {top['id']}" in first.get_by_role("heading").inner_text()
        assert f"{top['match_probability']:.3f}" in first.inner_text()
        assert "Why not merged:" in first.inner_text() and "match threshold" in first.inner_text()
        assert "prior" in (first.locator("figure.waterfall svg").get_attribute("aria-label") or "")
        left = top["left"]["fields"]
        for value in list(left.values())[:3]:
            assert str(value) in first.locator("table").first.inner_text()
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.screenshot(path=str(console.shots / "review.png"))  # the first pairs: the page is long
        # Filter by source: every pair shown has a record of it.
        page.get_by_label("Source").fill(source)
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url(re.compile(f"source={source}"))
        headings = page.locator("article.review h2").all_inner_texts()
        assert headings and all(f"record:{source}:" in h for h in headings)
        page.get_by_label("Reason").select_option("merge_protection")
        page.get_by_role("button", name="Filter").click()
        assert page.get_by_text("No open review items match these filters").is_visible()
        # Decide: match merges the two profiles now; no match stores a cannot-link.
        page.goto(console.server.url + "/console/identity/review")
        card = page.locator(f"#item-{top['id']}")
        card.get_by_label("Note").fill("same person: email typo")
        card.get_by_role("button", name="Match", exact=True).click()
        assert page.get_by_text(f"Item {top['id']} decided: Match.").is_visible()
        assert page.locator(f"#item-{top['id']}").count() == 0
        decided = cdp.review.get(top["id"])
        assert decided["status"] == "decided" and decided["decision"] == "match"
        assert decided["left"]["profile"]["id"] == decided["right"]["profile"]["id"]
        second = page.locator("article.review").first
        second_id = int(second.get_attribute("id").split("-")[1])  # type: ignore[union-attr]
        second.get_by_role("button", name="No match").click()
        assert page.get_by_text(f"Item {second_id} decided: No match.").is_visible()
        assert cdp.review.get(second_id)["decision"] == "no_match"
        labels = [label for label in cdp.labels.page(limit=1000).data if label["decision"] == "no_match"]
        assert labels
        # The decided tab shows both, with the note.
        page.get_by_label("Status").select_option("decided")
        page.get_by_role("button", name="Filter").click()
        assert page.get_by_text("same person: email typo").is_visible()
        assert not [u for u in outside if not u.startswith("console.")], outside


def test_merge_found_by_search_then_split_and_undo(console: Console) -> None:  # noqa: F811
    cdp = console.server.cdp
    # the other profile must be among the candidates the panel lists for its name (namesakes in the generated
    # data -- "John Smith", "John Smithers" -- could otherwise fill the list, depending on which people are picked)
    people = _people_with_records(cdp, _in_review(cdp), 12)
    a = people[0]

    def name(p: dict[str, Any]) -> str:
        return f"{p['traits']['first_name']} {p['traits']['last_name']}"

    b = next(p for p in people[1:] if p["id"] in {f["id"] for f in cdp.profiles.find(name(p), limit=CANDIDATES).data})
    b_name = name(b)
    b_record = cdp.lineage.records(b["id"])[0]
    with browser_page() as (page, outside):
        sign_in(page, console, console.admin)
        page.goto(f"{console.server.url}/console/people/{a['id']}")
        steward = page.locator("#steward")
        steward.get_by_label(re.compile("^Find the other profile")).fill(b_name)
        steward.get_by_role("button", name="Find").click()
        page.wait_for_url(re.compile("merge_q="))
        steward.get_by_label(re.compile(b["id"])).check()
        steward.locator("#merge-note").fill("one customer, two CRM entries")
        steward.screenshot(path=str(console.shots / "person-merge.png"))
        steward.get_by_role("button", name="Merge profiles").click()
        assert page.get_by_text("Merged by hand").is_visible()
        survivor = cdp.profiles.live_id(a["id"])
        assert cdp.profiles.live_id(b["id"]) == survivor
        history = page.locator("#merges table").inner_text()
        assert "manual" in history and "one customer, two CRM entries" in history
        assert b_record["external_id"] in page.locator("#records table").inner_text()
        # Split B's record and email off again.
        split = page.locator("#split-form")
        split.get_by_label(re.compile(re.escape(b_record["external_id"]))).check()
        split.get_by_label(f"email: {_email(b)}").check()
        split.get_by_label(re.compile("^Note")).fill("they are two people after all")
        split.get_by_role("button", name="Split off").click()
        assert page.get_by_text("Split by hand").is_visible()
        moved = cdp.profiles.lookup_id(source=b_record["source"], external_id=b_record["external_id"])
        assert moved != cdp.profiles.live_id(a["id"])
        assert "they are two people after all" in page.locator("#merges table").inner_text()
        page.locator("#steward").scroll_into_view_if_needed()
        page.locator("#merges").screenshot(path=str(console.shots / "person-history.png"))
        # Undo the split: one profile again.
        page.locator("#undo-note").fill("split by mistake")
        page.get_by_role("button", name="Undo the last manual merge or split").click()
        assert page.get_by_text("Undone").is_visible()
        assert cdp.profiles.lookup_id(source=b_record["source"], external_id=b_record["external_id"]) == (
            cdp.profiles.live_id(a["id"])
        )
        assert "split by mistake" in page.locator("#merges table").inner_text()
        assert not [u for u in outside if not u.startswith("console.")], outside


def test_privacy_erasure_confirms_then_runs_and_an_export_downloads(console: Console) -> None:  # noqa: F811
    cdp = console.server.cdp
    erase, export = _people_with_records(cdp, _in_review(cdp) | {p["id"] for p in _merge_pair(cdp)}, 2)
    erase_name = f"{erase['traits']['first_name']} {erase['traits']['last_name']}"
    with browser_page() as (page, outside):
        sign_in(page, console, console.admin)
        nav(page, "Privacy requests")
        form = page.locator("#privacy-form")
        form.get_by_label("Request").select_option("delete")
        form.get_by_label("Identifier type").select_option("email")
        form.get_by_label("Identifier value").fill(_email(erase))
        form.get_by_role("button", name="Review request").click()
        confirm = page.locator("#confirm")
        assert page.get_by_role("heading", level=1).inner_text().startswith("Confirm: Erase email")
        assert "erases 1 profile, for good" in confirm.inner_text()
        assert erase_name in confirm.inner_text() and erase["id"] in confirm.inner_text()
        assert re.search(r"\d+ events, 1 CRM records, \d+ identifiers", confirm.inner_text())
        shot(page, console, "privacy-confirm")
        assert cdp.privacy.list_requests().data == []  # nothing sent before confirming
        page.get_by_role("button", name=re.compile("^Confirm: erase")).click()
        request_id = page.locator("p.notice code").inner_text()
        assert _wait_status(cdp, request_id) == "done"
        # An export of another person, downloaded from the list.
        form = page.locator("#privacy-form")
        form.get_by_label("Request").select_option("export")
        form.get_by_label("Identifier type").select_option("email")
        form.get_by_label("Identifier value").fill(_email(export))
        form.get_by_role("button", name="Review request").click()
        assert "exports 1 profile" in page.locator("#confirm").inner_text()
        page.get_by_role("button", name=re.compile("^Confirm: export")).click()
        export_id = page.locator("p.notice code").inner_text()
        assert _wait_status(cdp, export_id) == "done"
        page.reload()
        rows = page.locator("table tbody tr")
        erased = rows.filter(has_text=request_id).inner_text()
        assert "delete" in erased and "done" in erased and "events" in erased
        with page.expect_download() as info:
            page.get_by_role("link", name=f"Download {export_id}.json").click()
        document = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
        assert document["request_id"] == export_id
        assert any(i.get("value") == _email(export) for i in document["identifiers"])
        shot(page, console, "privacy")
        # The erased person is gone from search.
        page.goto(f"{console.server.url}/console/people?q={_email(erase)}")
        assert page.get_by_text("No profile matches").is_visible()
        assert not [u for u in outside if not u.startswith("console.")], outside


def _merge_pair(cdp: CDP) -> list[dict[str, Any]]:
    """The two people the merge journey uses (kept out of the privacy journey, whatever the order)."""
    return _people_with_records(cdp, _in_review(cdp), 2)


def test_new_pages_pass_axe_core(console: Console) -> None:  # noqa: F811
    axe = npm_package("axe-core", AXE_CORE) / "axe.min.js"
    cdp = console.server.cdp
    person = _people_with_records(cdp, set(), 1)[0]
    pages = [
        "/console/identity/review",
        "/console/identity/review?status=decided",
        "/console/privacy",
        f"/console/people/{person['id']}?merge_q={person['traits']['last_name']}",
    ]
    with browser_page() as (page, _outside):
        sign_in(page, console, console.admin)
        found: list[str] = []
        for path in pages:
            page.goto(console.server.url + path)
            found += [f"{path}: {v}" for v in _serious(page, axe)]
        nav(page, "Privacy requests")
        page.locator("#privacy-form").get_by_label("Identifier value").fill(_email(person))
        page.locator("#privacy-form").get_by_role("button", name="Review request").click()
        found += [f"privacy confirm: {v}" for v in _serious(page, axe)]
    assert found == []
