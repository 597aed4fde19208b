"""Helpers for the console tests: sign in through the real form, read the CSRF token a page carries."""

from __future__ import annotations

import re

import httpx

HTML = {"Accept": "text/html"}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def sign_in(client: httpx.Client, token: str, next_url: str = "/console/people") -> str:
    """Sign ``client`` in with ``token`` through the form; the session's CSRF token."""
    form = client.get("/console/sign-in", headers=HTML)
    response = client.post(
        "/console/sign-in",
        data={"csrf_token": csrf_of(form.text), "token": token, "next": next_url},
        headers=HTML,
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    page = client.get(response.headers["location"], headers=HTML)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
