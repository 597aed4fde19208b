"""Admin endpoints read a JSON body whatever its Content-Type (``curl -d`` sends a form type); a body that
is not JSON is refused with a message naming the type it came with."""

from __future__ import annotations

import pytest

from tests.conftest import LiveServer

SEGMENT = b'{"key": "pro", "name": "Pro", "rule": {"trait": "plan", "op": "eq", "value": "pro"}}'


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_json_whatever_the_content_type(server: LiveServer, admin_key: str, content_type: str | None) -> None:
    headers = {"Authorization": f"Bearer {admin_key}"}
    if content_type:
        headers["Content-Type"] = content_type
    with server.client() as client:
        created = client.post("/v1/segments", content=SEGMENT, headers=headers)
        assert created.status_code == 201, created.text
        assert created.json()["key"] == "pro"
        patched = client.put("/v1/segments/pro", content=SEGMENT.replace(b'"Pro"', b'"Pro users"'), headers=headers)
        assert patched.status_code == 200 and patched.json()["name"] == "Pro users"


def test_a_form_that_is_not_json_is_refused_clearly(server: LiveServer, admin_key: str) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/segments",
            content=b"key=pro&name=Pro",
            headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 400
    assert "application/x-www-form-urlencoded" in response.json()["message"]
