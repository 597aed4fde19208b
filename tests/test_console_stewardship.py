"""Console stewardship and privacy over HTTP (a real server, a real store): manual merge, split and undo from
the person page, privacy requests with their confirmation step and export download, and the doors (read
sessions see but cannot act, CSRF on every form, notes required)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, count
from tests.console_helpers import HTML, csrf_of, sign_in

EVIL = "<script>alert(1)</script>"


@pytest.fixture
def people(server: LiveServer, write_key: str) -> tuple[LiveServer, str, str]:
    """Two people the graph keeps apart (Ada with a device and events, and a CRM record of 'Ada L.')."""
    with server.client() as client:
        batch = [
            {"type": "identify", "userId": "ada", "anonymousId": "dev-1",
             "traits": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}},
            {"type": "track", "userId": "ada", "event": "Order Completed", "properties": {"revenue": 10}},
            {"type": "track", "anonymousId": "dev-1", "event": "Page Viewed"},
        ]  # fmt: skip
        assert client.post("/v1/batch", json={"batch": batch}, auth=(write_key, "")).status_code == 200
        records = [{"source": "crm", "external_id": "c-7", "first_name": "Ada", "last_name": EVIL,
                    "email": "ada.l@example.org"}]  # fmt: skip
        assert client.post("/v1/records", json=records, auth=(write_key, "")).status_code in (200, 202)
    cdp = server.cdp
    return server, cdp.profiles.lookup_id(user_id="ada"), cdp.profiles.lookup_id(source="crm", external_id="c-7")


def _wait_done(server: LiveServer, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = server.cdp.privacy.get(request_id)
        if found["status"] in ("done", "failed"):
            return found
        time.sleep(0.05)
    raise AssertionError(f"privacy request {request_id} did not finish")


def _post(client: httpx.Client, path: str, data: dict[str, Any]) -> httpx.Response:
    return client.post(path, data=data, headers=HTML, follow_redirects=False)


def test_merge_split_and_undo_from_the_person_page(people: tuple[LiveServer, str, str], admin_key: str) -> None:
    server, ada, crm = people
    cdp = server.cdp
    with server.client() as client:
        csrf = sign_in(client, admin_key)
        # Found by search: the other profile is offered, never the page's own.
        page = client.get(f"/console/people/{ada}", params={"merge_q": "ada"}, headers=HTML)
        assert page.status_code == 200
        assert f'value="{crm}"' in page.text and f'name="other" value="{ada}"' not in page.text
        assert EVIL not in page.text and "&lt;script&gt;" in page.text
        # A note is required, and nothing changes without one.
        refused = _post(client, f"/console/people/{ada}/merge", {"csrf_token": csrf, "other": crm, "note": " "})
        assert refused.status_code == 400 and "write a note" in refused.text
        assert cdp.profiles.live_id(crm) == crm
        merged = _post(client, f"/console/people/{ada}/merge", {"csrf_token": csrf, "other": crm, "note": "same Ada"})
        assert merged.status_code == 303
        survivor = cdp.profiles.live_id(ada)
        assert cdp.profiles.live_id(crm) == survivor
        after = client.get(merged.headers["location"], headers=HTML)
        assert "Merged by hand" in after.text
        history = cdp.profiles.merges(survivor)
        assert history[-1]["reason"] == "manual" and history[-1]["details"]["note"] == "same Ada"
        assert "same Ada" in after.text.split('id="merges"')[1]
        # Split the CRM record and its email off again (checkboxes repeat their field name).
        split = client.post(
            f"/console/people/{survivor}/split",
            content=(
                f"csrf_token={csrf}&record=record%3Acrm%3Ac-7&identifier=email%3Aada.l%40example.org"
                "&note=two+people+after+all"
            ),
            headers={**HTML, "Content-Type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )
        assert split.status_code == 303, split.text
        new_id = cdp.profiles.lookup_id(source="crm", external_id="c-7")
        assert new_id != cdp.profiles.lookup_id(user_id="ada")
        assert cdp.profiles.lookup_id(email="ada.l@example.org") == new_id
        assert cdp.profiles.lookup_id(anonymous_id="dev-1") == cdp.profiles.lookup_id(user_id="ada")
        shown = client.get(split.headers["location"], headers=HTML)
        assert "Split by hand" in shown.text and new_id in shown.text
        assert cdp.profiles.merges(new_id)[-1]["details"]["note"] == "two people after all"
        # Undo the split: one profile again, recorded with the note.
        undone = _post(client, f"/console/people/{new_id}/undo", {"csrf_token": csrf, "note": "oops"})
        assert undone.status_code == 303
        assert cdp.profiles.lookup_id(source="crm", external_id="c-7") == cdp.profiles.lookup_id(user_id="ada")
        final = client.get(undone.headers["location"], headers=HTML)
        assert "Undone" in final.text and "oops" in final.text
        # Splitting nothing is refused with a clear message.
        empty = _post(client, f"/console/people/{survivor}/split", {"csrf_token": csrf, "note": "x"})
        assert empty.status_code == 400 and "tick at least one" in empty.text


def test_read_sessions_see_but_cannot_merge_split_undo_or_request(
    people: tuple[LiveServer, str, str], read_key: str, admin_key: str
) -> None:
    server, ada, crm = people
    cdp = server.cdp
    with server.client() as client:
        csrf = sign_in(client, read_key)
        page = client.get(f"/console/people/{ada}", headers=HTML)
        assert "you can look, not merge" in page.text and "/merge" not in page.text
        assert "Review queue" in page.text and 'href="/console/privacy"' in page.text
        privacy = client.get("/console/privacy", headers=HTML)
        assert privacy.status_code == 200 and "you can look, not make requests" in privacy.text
        review = client.get("/console/identity/review", headers=HTML)
        assert review.status_code == 200
        for path, data in [
            (f"/console/people/{ada}/merge", {"other": crm, "note": "n"}),
            (f"/console/people/{ada}/split", {"identifier": "anonymous_id:dev-1", "note": "n"}),
            (f"/console/people/{ada}/undo", {"note": "n"}),
            ("/console/identity/review/1", {"decision": "match"}),
            ("/console/privacy/confirm", {"type": "delete", "identifier_type": "user_id", "value": "ada"}),
            ("/console/privacy", {"type": "delete", "identifier_type": "user_id", "value": "ada", "confirmed": "yes"}),
        ]:
            response = _post(client, path, {"csrf_token": csrf, **data})
            assert response.status_code == 403 and "admin token" in response.text, path
        assert cdp.profiles.live_id(crm) == crm and count(cdp, "privacy_requests") == 0
    # An admin session without the form's CSRF token is refused too.
    with server.client() as client:
        sign_in(client, admin_key)
        for path in (f"/console/people/{ada}/merge", "/console/privacy", f"/console/people/{ada}/undo"):
            response = _post(client, path, {"other": crm, "note": "n", "type": "delete"})
            assert response.status_code == 403 and "CSRF" in response.text, path
        assert cdp.profiles.live_id(crm) == crm and count(cdp, "privacy_requests") == 0


def test_privacy_request_confirms_what_it_erases_then_runs(
    people: tuple[LiveServer, str, str], admin_key: str, read_key: str
) -> None:
    server, ada, _ = people
    cdp = server.cdp
    with server.client() as client:
        csrf = sign_in(client, admin_key)
        form = {"csrf_token": csrf, "type": "delete", "identifier_type": "email", "value": " ADA@example.com "}
        confirm = _post(client, "/console/privacy/confirm", form)
        assert confirm.status_code == 200
        text = confirm.text
        assert "This <strong>erases</strong> 1 profile, for good:" in " ".join(text.split())
        assert "Ada Lovelace" in text and ada in text
        assert "3 events, 0 CRM records, 3 identifiers" in text  # identify, track, page; user id, device, email
        assert "anonymous_id:</span> dev-1" in text
        assert count(cdp, "privacy_requests") == 0  # nothing sent yet
        # Without the confirmation, nothing is sent.
        unconfirmed = _post(client, "/console/privacy", form)
        assert unconfirmed.status_code == 400 and count(cdp, "privacy_requests") == 0
        sent = _post(client, "/console/privacy", {**form, "csrf_token": csrf_of(text), "confirmed": "yes"})
        assert sent.status_code == 303
        request_id = sent.headers["location"].split("submitted=")[1]
        assert _wait_done(server, request_id)["status"] == "done"
        listing = client.get("/console/privacy", headers=HTML)
        assert request_id in listing.text and ">done<" in listing.text and "events 3" in listing.text
        assert count(cdp, "events", "profile_id = ?", (ada,)) == 0
        # An identifier nobody has: the confirmation says so.
        nobody = _post(client, "/console/privacy/confirm", {**form, "value": "nobody@example.com"})
        assert "No stored profile has email nobody@example.com" in nobody.text
        # Bad input: a clear error naming the field.
        bad = _post(client, "/console/privacy/confirm", {**form, "type": "obliterate"})
        assert bad.status_code == 400 and "type must be one of" in bad.text


def test_export_download_for_admins_only(people: tuple[LiveServer, str, str], admin_key: str, read_key: str) -> None:
    server, _, crm = people
    with server.client() as client:
        csrf = sign_in(client, admin_key)
        form = {"csrf_token": csrf, "type": "export", "identifier_type": "record", "value": "crm:c-7"}
        confirm = _post(client, "/console/privacy/confirm", form)
        assert "This <strong>exports</strong> 1 profile:" in " ".join(confirm.text.split()) and crm in confirm.text
        sent = _post(client, "/console/privacy", {**form, "confirmed": "yes"})
        request_id = sent.headers["location"].split("submitted=")[1]
        assert _wait_done(server, request_id)["status"] == "done"
        listing = client.get("/console/privacy", headers=HTML)
        link = f"/console/privacy/{request_id}/download"
        assert link in listing.text
        download = client.get(link)
        assert download.status_code == 200 and download.headers["content-type"].startswith("application/json")
        assert "ada.l@example.org" in download.text
        assert download.json()["request_id"] == request_id
        missing = client.get("/console/privacy/prq_nope/download", headers=HTML)
        assert missing.status_code == 404
    with server.client() as client:
        sign_in(client, read_key)
        assert link not in client.get("/console/privacy", headers=HTML).text
        refused = client.get(link, headers=HTML)
        assert refused.status_code == 403 and "ada.l@example.org" not in refused.text
