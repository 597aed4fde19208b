"""The OpenAPI document says what the routes accept, and the routes refuse what it forbids.

Found by schemathesis' acceptance checks (``tests/test_schemathesis.py``); each case here is one of them, pinned
down on the real server. The tracking routes stay as lenient as Segment's SDKs need (numeric ids, any
``sentAt``): the document says so rather than the route refusing it.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import LiveServer, count


def operation(document: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    return document["paths"][path][method]  # type: ignore[no-any-return]


def body_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    return operation(document, path)["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def test_numeric_ids_and_any_sent_at_are_documented_and_taken(server: LiveServer, write_key: str) -> None:
    with server.client(auth=(write_key, "")) as http:
        document = http.get("/openapi.json").json()
        track = body_schema(document, "/v1/track")
        assert {"type": "number"} in track["properties"]["userId"]["anyOf"]
        assert {"type": "number"} in track["properties"]["messageId"]["anyOf"]
        assert "type" not in track["properties"]["sentAt"]  # any value: one that is not a time is counted
        answer = http.post(
            "/v1/track", json={"userId": 42, "messageId": 7, "event": "Signed In", "sentAt": {"not": "a time"}}
        )
        assert answer.status_code == 200
    row = server.cdp.store.query("SELECT user_id, message_id FROM events")[0]
    assert row == {"user_id": "42", "message_id": "7"}


def test_a_write_key_that_is_not_a_string_is_refused(server: LiveServer, write_key: str) -> None:
    with server.client(auth=(write_key, "")) as http:
        for body, path in (
            ({"userId": "u", "event": "E", "writeKey": 0}, "/v1/track"),
            ({"batch": [], "writeKey": []}, "/v1/batch"),
        ):
            answer = http.post(path, json=body)
            assert answer.status_code == 400, path
            assert answer.json()["details"]["field"] == "writeKey"
            assert "must be a string" in answer.json()["message"]
        batch = {"batch": [{"type": "track", "userId": "u", "event": "E", "writeKey": 5}]}
        refused = http.post("/v1/batch", json=batch).json()
        assert refused["details"]["errors"][0]["field"] == "writeKey"
    assert count(server.cdp, "events") == 0


def test_an_unknown_write_key_in_a_single_message_is_401(server: LiveServer, write_key: str) -> None:
    with server.client(auth=(write_key, "")) as http:
        answer = http.post("/v1/track", json={"userId": "u", "event": "E", "writeKey": "wk_unknown"})
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"
    assert count(server.cdp, "events") == 0


def test_batch_messages_are_documented_by_type(server: LiveServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    items = body_schema(document, "/v1/batch")["properties"]["batch"]["items"]["oneOf"]
    kinds = {item["properties"]["type"]["const"] for item in items}
    assert kinds == {"track", "identify", "page", "screen", "group", "alias"}
    track = next(item for item in items if item["properties"]["type"]["const"] == "track")
    assert set(track["required"]) >= {"type", "event"}


def test_records_refuse_an_empty_body_and_a_blank_source(server: LiveServer, write_key: str) -> None:
    with server.client(auth=(write_key, "")) as http:
        empty = http.post("/v1/records", content=b"  ")
        assert empty.status_code == 400 and "empty" in empty.json()["message"]
        blank = http.post("/v1/records", params={"source": " "}, json=[{"external_id": "1"}])
        assert blank.status_code == 400 and "source" in blank.json()["message"]
    assert count(server.cdp, "source_records") == 0


def test_events_refuse_an_unknown_type(server: LiveServer, read_key: str) -> None:
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as http:
        answer = http.get("/v1/events", params={"type": "null"})
        assert answer.status_code == 400 and answer.json()["details"] == {"field": "type"}
        assert http.get("/v1/events", params={"type": "track"}).status_code == 200
        document = http.get("/openapi.json").json()
    parameters = {p["name"]: p["schema"] for p in operation(document, "/v1/events", "get")["parameters"]}
    assert parameters["since"]["format"] == "date-time"
    assert "identify" in parameters["type"]["enum"]


def test_preview_and_persona_bodies_are_documented(server: LiveServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert body_schema(document, "/v1/segments/preview")["type"] == "object"
    assert body_schema(document, "/v1/personas/predict")["required"] == ["titles"]
    assert len(body_schema(document, "/v1/personas/labels")["anyOf"]) == 3
