"""The console's doors: no page or fragment without a session, read sessions cannot act, CSRF on every form,
sessions expire and end at sign-out, tokens stay out of URLs and logs, and data renders as text (no XSS)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api import create_app
from cdp import CDP, Settings
from tests.conftest import LiveServer, count, free_port
from tests.console_helpers import HTML, csrf_of, sign_in

PAGES = [
    "/console",
    "/console/people",
    "/console/people?q=a",
    "/console/segments",
    "/console/segments/new",
    "/console/events",
    "/console/webhooks",
    "/console/quality",
    "/console/identity",
    "/console/identity/review",
    "/console/privacy",
]
EVIL = "<script>alert(1)</script>"
RULE = {"key": "buyers", "name": "Buyers", "rule": {"event": "Order Completed"}}


@pytest.fixture
def seeded(server: LiveServer, write_key: str) -> LiveServer:
    """A store with one person whose trait and event name are a script tag, and one segment."""
    with server.client() as client:
        batch = [
            {"type": "identify", "userId": "u1", "traits": {"first_name": EVIL, "email": "evil@example.com"}},
            {"type": "track", "userId": "u1", "event": EVIL, "properties": {"note": EVIL}},
            {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 10}},
        ]
        response = client.post("/v1/batch", json={"batch": batch}, auth=(write_key, ""))
        assert response.status_code == 200
    server.cdp.segments.create(RULE)
    server.cdp.segments.compute("buyers")
    return server


def profile_id(server: LiveServer) -> str:
    return server.cdp.profiles.lookup_id(user_id="u1")


def test_no_page_or_fragment_without_a_session(seeded: LiveServer) -> None:
    pid = profile_id(seeded)
    pages = [*PAGES, f"/console/people/{pid}", "/console/segments/buyers", "/console/quality/samples?source=x"]
    with seeded.client() as client:
        for path in pages:
            page = client.get(path, headers=HTML, follow_redirects=False)
            assert page.status_code == 303, path
            assert page.headers["location"].startswith("/console/sign-in?next="), path
            assert EVIL not in page.text and "evil@example.com" not in page.text
        # Fragments and script calls: a JSON 401, never data.
        fragment = client.get("/console/events/fragment", headers={"X-Console-Fragment": "1"})
        assert fragment.status_code == 401 and fragment.json()["code"] == "sign_in_required"
        preview = client.post(
            "/console/segments/preview", data={"definition": "{}"}, headers={"X-Console-Fragment": "1"}
        )
        assert preview.status_code == 401
        # Forms posted without a session go to the sign-in form and change nothing.
        before = count(seeded.cdp, "segment_runs")
        response = client.post("/console/segments/buyers/compute", headers=HTML, follow_redirects=False)
        assert response.status_code == 303 and "/console/sign-in" in response.headers["location"]
        assert count(seeded.cdp, "segment_runs") == before


def test_sign_in_refuses_bad_tokens_and_write_keys(server: LiveServer, write_key: str) -> None:
    with server.client() as client:
        for token, status, text in [
            ("rk_not_a_real_token", 401, "unknown or revoked"),
            (write_key, 403, "write key only sends events"),
            ("", 400, "Paste a read or admin token"),
        ]:
            form = client.get("/console/sign-in", headers=HTML)
            response = client.post(
                "/console/sign-in", data={"csrf_token": csrf_of(form.text), "token": token}, headers=HTML
            )
            assert response.status_code == status and text in response.text
            assert "cdp_console" not in response.cookies
        # The sign-in form itself needs its CSRF token (login CSRF).
        response = client.post("/console/sign-in", data={"token": write_key, "csrf_token": "forged"}, headers=HTML)
        assert response.status_code == 403 and "form expired" in response.text


def test_session_cookie_is_signed_httponly_strict_and_names_no_token(server: LiveServer, admin_key: str) -> None:
    with server.client() as client:
        form = client.get("/console/sign-in?next=/console/quality", headers=HTML)
        response = client.post(
            "/console/sign-in",
            data={"csrf_token": csrf_of(form.text), "token": admin_key, "next": "/console/quality"},
            headers=HTML,
            follow_redirects=False,
        )
        assert response.status_code == 303 and response.headers["location"] == "/console/quality"
        assert admin_key not in response.headers["location"]
        header = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "cdp_console=" in v)
        assert "HttpOnly" in header and "SameSite=strict" in header.replace("Strict", "strict") and "Max-Age=" in header
        value = client.cookies.get("cdp_console")
        assert value and admin_key not in value
        # A tampered cookie is no session.
        body, _, mac = value.partition(".")
        client.cookies.set("cdp_console", body + "." + mac[::-1], path="/console")
        assert client.get("/console/quality", headers=HTML, follow_redirects=False).status_code == 303


def test_open_redirects_are_refused(server: LiveServer, read_key: str) -> None:
    with server.client() as client:
        form = client.get("/console/sign-in", headers=HTML)
        response = client.post(
            "/console/sign-in",
            data={"csrf_token": csrf_of(form.text), "token": read_key, "next": "//evil.example/console"},
            headers=HTML,
            follow_redirects=False,
        )
        assert response.headers["location"] == "/console/people"


def test_a_read_session_sees_but_cannot_act(seeded: LiveServer, read_key: str) -> None:
    with seeded.client() as client:
        csrf = sign_in(client, read_key)
        page = client.get("/console/segments/buyers", headers=HTML)
        assert page.status_code == 200 and "Compute now" not in page.text and "look, not act" in page.text
        runs, hooks, segments = (count(seeded.cdp, t) for t in ("segment_runs", "webhook_endpoints", "segments"))
        attempts = [
            ("/console/segments/buyers/compute", {}),
            ("/console/webhooks", {"url": "http://127.0.0.1:9/hook", "event_segment.entered": "1"}),
            ("/console/segments/builder", {"action": "save", "definition": '{"key": "x", "name": "X", "rule": {}}'}),
        ]
        for path, data in attempts:
            response = client.post(path, data={**data, "csrf_token": csrf}, headers=HTML)
            assert response.status_code == 403, path
            assert "admin token" in response.text
        assert (count(seeded.cdp, "segment_runs"), count(seeded.cdp, "webhook_endpoints")) == (runs, hooks)
        assert count(seeded.cdp, "segments") == segments
        # Previewing is reading: allowed.
        preview = client.post(
            "/console/segments/preview",
            data={"definition": '{"name": "p", "rule": {"event": "Order Completed"}}', "csrf_token": csrf},
            headers={"X-Console-Fragment": "1"},
        )
        assert preview.status_code == 200 and 'data-size="1"' in preview.text


def test_every_form_needs_the_csrf_token(seeded: LiveServer, admin_key: str) -> None:
    with seeded.client() as client:
        csrf = sign_in(client, admin_key)
        before = count(seeded.cdp, "segment_runs")
        for token in (None, "forged", csrf[:-2]):
            data = {} if token is None else {"csrf_token": token}
            response = client.post("/console/segments/buyers/compute", data=data, headers=HTML)
            assert response.status_code == 403 and "CSRF" in response.text
        assert count(seeded.cdp, "segment_runs") == before
        response = client.post("/console/sign-out", headers=HTML, follow_redirects=False)
        assert response.status_code == 403  # sign-out is a form too
        ok = client.post(
            "/console/segments/buyers/compute", data={"csrf_token": csrf}, headers=HTML, follow_redirects=True
        )
        assert ok.status_code == 200 and "Computed (run" in ok.text
        assert count(seeded.cdp, "segment_runs") == before + 1


def test_sign_out_ends_the_session_even_for_a_copied_cookie(seeded: LiveServer, admin_key: str) -> None:
    with seeded.client() as client:
        csrf = sign_in(client, admin_key)
        copied = client.cookies.get("cdp_console")
        out = client.post("/console/sign-out", data={"csrf_token": csrf}, headers=HTML, follow_redirects=True)
        assert out.url.path == "/console/sign-in" and "You are signed out" in out.text
        assert client.get("/console/people", headers=HTML, follow_redirects=False).status_code == 303
    with seeded.client(cookies={"cdp_console": copied}) as replay:
        assert replay.get("/console/people", headers=HTML, follow_redirects=False).status_code == 303


def test_revoking_the_token_signs_its_sessions_out(seeded: LiveServer) -> None:
    info, token = seeded.cdp.keys.create("read", "temp")
    with seeded.client() as client:
        sign_in(client, token)
        assert client.get("/console/people", headers=HTML).status_code == 200
        seeded.cdp.keys.revoke(info.id)
        assert client.get("/console/people", headers=HTML, follow_redirects=False).status_code == 303


@pytest.fixture
def short_sessions(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    settings = Settings(
        db=tmp_path / "short.db", scheduler_enabled=False, key_cache_seconds=0, console_session_seconds=1
    )
    cdp = CDP(settings)
    token = cdp.keys.create("read", "short")[1]
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(cdp=cdp, scheduler=False), port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", cdp), token
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        cdp.close()


def test_sessions_expire(short_sessions: tuple[LiveServer, str]) -> None:
    server, token = short_sessions
    with server.client() as client:
        sign_in(client, token)
        cookie = client.cookies.get("cdp_console")
        time.sleep(1.2)
        # Even if the browser kept the cookie past its Max-Age, the signed expiry inside it is checked.
        client.cookies.set("cdp_console", cookie or "", path="/console")
        response = client.get("/console/people", headers=HTML, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/console/sign-in")


def test_tokens_stay_out_of_urls_and_the_access_log(
    server: LiveServer, admin_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="cdp.access"), server.client() as client:
        sign_in(client, admin_key)
        for path in PAGES:
            page = client.get(path, headers=HTML, follow_redirects=True)
            assert page.status_code == 200 and admin_key not in page.text and admin_key not in str(page.url)
    assert "POST /console/sign-in 303" in caplog.text
    assert admin_key not in caplog.text


def test_scripts_in_data_render_as_text_everywhere(seeded: LiveServer, read_key: str) -> None:
    pid = profile_id(seeded)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    with seeded.client() as client:
        csrf = sign_in(client, read_key)
        pages = {
            "people": client.get("/console/people?q=evil", headers=HTML),
            "person": client.get(f"/console/people/{pid}", headers=HTML),
            "events": client.get("/console/events", headers=HTML),
            "events fragment": client.get("/console/events/fragment", headers={"X-Console-Fragment": "1"}),
            "segment": client.get("/console/segments/buyers", headers=HTML),
            "quality": client.get("/console/quality", headers=HTML),
            "timeline filter": client.get(f"/console/people/{pid}", params={"event": EVIL}, headers=HTML),
            "search echo": client.get("/console/people", params={"q": EVIL}, headers=HTML),
            "preview": client.post(
                "/console/segments/preview",
                data={
                    "definition": f'{{"name": "x", "rule": {{"event": "{EVIL[:-9]}<\\/script>"}}}}',
                    "csrf_token": csrf,
                },
                headers={"X-Console-Fragment": "1"},
            ),
            "builder error": client.post(
                "/console/segments/builder", data={"definition": EVIL, "csrf_token": csrf}, headers=HTML
            ),
        }
        for name, page in pages.items():
            assert EVIL not in page.text, name
            assert "<script>alert" not in page.text, name
        for name in ("people", "person", "events", "events fragment", "quality", "search echo"):
            assert escaped in pages[name].text, name
        assert "default-src 'self'" in pages["person"].headers["content-security-policy"]


def test_console_errors_are_pages_for_people_and_json_for_scripts(server: LiveServer, read_key: str) -> None:
    with server.client() as client:
        sign_in(client, read_key)
        page = client.get("/console/people/prof_nope", headers=HTML)
        assert page.status_code == 404 and "no profile with id" in page.text and "<h1>" in page.text
        script = client.get("/console/segments/nope", headers={"Accept": "application/json"})
        assert script.status_code == 404 and script.json()["code"] == "unknown_segment"
        bad = client.get("/console/events", params={"type": "bogus"}, headers=HTML)
        assert bad.status_code == 200 and "type must be one of" in bad.text
        assert isinstance(httpx.URL(str(page.url)).path, str)
