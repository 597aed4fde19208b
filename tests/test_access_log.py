"""One access log line per request (method, path, status, ms; never a key), and ``GET /`` leads to the docs."""

from __future__ import annotations

import logging
import re

import pytest

from tests.conftest import LiveServer


def test_one_line_per_request_without_secrets(
    server: LiveServer, write_key: str, read_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cdp.access")
    with server.client() as client:
        assert client.post("/v1/track", json={"userId": "u", "event": "E"}, auth=(write_key, "")).status_code == 200
        assert client.get(f"/sourceConfig/?writeKey={write_key}").status_code == 200
        assert client.get("/v1/events", headers={"Authorization": f"Bearer {read_key}"}).status_code == 200
        assert client.get("/v1/events", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get("/no/such/route").status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "cdp.access"]
    assert len(lines) == 5, lines
    pattern = re.compile(r"^(GET|POST) (\S+) (\d{3}) \d+\.\dms$")
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m[1], m[2], m[3]) for m in parsed if m] == [
        ("POST", "/v1/track", "200"),
        ("GET", "/sourceConfig/", "200"),
        ("GET", "/v1/events", "200"),
        ("GET", "/v1/events", "401"),
        ("GET", "/no/such/route", "404"),
    ]
    text = "\n".join(lines)
    assert write_key not in text and read_key not in text


def test_root_leads_to_the_console_sign_in(server: LiveServer) -> None:
    with server.client(headers={"Accept": "text/html"}) as client:
        response = client.get("/", follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == "/console"
        landed = client.get("/", follow_redirects=True)
        assert landed.url.path == "/console/sign-in" and "API token (read or admin)" in landed.text
        assert "swagger-ui" in client.get("/docs").text
