"""The Segment-compatible Tracking API over a real HTTP server and a real SQLite file."""

from __future__ import annotations

import gzip
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdp import CDP
from cdp.ingest.tracking import _iso
from cdp.timeutil import format_ts, parse_ts
from tests.conftest import LiveServer, count


@pytest.fixture(params=["thread", "process"])
def ingest_writer(request: pytest.FixtureRequest) -> str:
    """Every test here runs with the writer thread and with the ingest writer process (as `cdp serve`)."""
    return str(request.param)


KINDS = {
    "track": {"userId": "u1", "event": "Order Completed", "properties": {"revenue": 20}},
    "identify": {"userId": "u1", "traits": {"email": "Jane@Example.com"}},
    "page": {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}},
    "screen": {"userId": "u1", "name": "Settings"},
    "group": {"userId": "u1", "groupId": "acme", "traits": {"plan": "pro"}},
    "alias": {"previousId": "a1", "userId": "u1"},
}
SHORT = {"track": "t", "identify": "i", "page": "p", "screen": "s", "group": "g", "alias": "a"}


def stored(server: LiveServer, **where: Any) -> list[dict[str, Any]]:
    clause = " AND ".join(f"{k} = ?" for k in where) or "1"
    return server.cdp.store.query(f"SELECT * FROM events WHERE {clause} ORDER BY id", tuple(where.values()))


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_message_type_is_stored_on_long_and_short_paths(server: LiveServer, write_key: str, kind: str) -> None:
    with server.client(auth=(write_key, "")) as client:
        for path in (kind, SHORT[kind]):
            response = client.post(f"/v1/{path}", json={**KINDS[kind], "messageId": f"{kind}-{path}"})
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True}
    rows = stored(server, type=kind)
    assert [r["message_id"] for r in rows] == [f"{kind}-{kind}", f"{kind}-{SHORT[kind]}"]
    assert rows[0]["source"] == "web"


def test_batch_and_short_batch(server: LiveServer, write_key: str) -> None:
    batch = [{"type": k, **v, "messageId": f"b-{k}"} for k, v in KINDS.items()]
    with server.client(auth=(write_key, "")) as client:
        assert client.post("/v1/batch", json={"batch": batch}).json() == {"success": True}
        assert client.post("/v1/b", json={"batch": [{**batch[0], "messageId": "short"}]}).status_code == 200
    assert count(server.cdp, "events") == len(KINDS) + 1


def test_fields_are_kept(server: LiveServer, write_key: str) -> None:
    message = {
        "userId": "u1",
        "anonymousId": "anon-1",
        "event": "Order Completed",
        "properties": {"revenue": 99.5, "products": [{"sku": "A"}]},
        "context": {"ip": "1.2.3.4", "traits": {"email": " X@Y.COM "}},
        "integrations": {"All": False},
        "messageId": "m-keep",
        "channel": "server",
    }
    with server.client(auth=(write_key, "")) as client:
        assert client.post("/v1/track", json=message).status_code == 200
    (row,) = stored(server)
    assert row["user_id"] == "u1" and row["anonymous_id"] == "anon-1" and row["event"] == "Order Completed"
    assert json.loads(row["properties"]) == message["properties"]
    assert json.loads(row["context"]) == {"ip": "1.2.3.4", "traits": {"email": "x@y.com"}}
    assert json.loads(row["integrations"]) == {"All": False}
    assert json.loads(row["extra"]) == {"channel": "server"}


def test_write_key_in_body_and_per_message(server: LiveServer, write_key: str, fresh_db: Any) -> None:
    _, other = fresh_db.keys.create("write", "mobile")
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/v1/track", json={**KINDS["track"], "writeKey": write_key}).status_code == 200
        body = {"batch": [{"type": "track", **KINDS["track"], "writeKey": other, "messageId": "per-message"}]}
        assert client.post("/v1/batch", json=body).status_code == 200
        mixed = {
            "writeKey": write_key,
            "batch": [
                {"type": "track", **KINDS["track"], "messageId": "batch-key"},
                {"type": "track", **KINDS["track"], "messageId": "own-key", "writeKey": other},
            ],
        }
        assert client.post("/v1/batch", json=mixed).status_code == 200
    sources = {r["message_id"]: r["source"] for r in stored(server)}
    assert sources["per-message"] == "mobile"
    assert sources["batch-key"] == "web"
    assert sources["own-key"] == "mobile"


def test_missing_unknown_and_revoked_keys_are_401(server: LiveServer, write_key: str, fresh_db: Any) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/v1/track", json=KINDS["track"])
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized" and "write key" in response.json()["message"]
        assert client.post("/v1/track", json=KINDS["track"], auth=("wk_nope", "")).status_code == 401
        assert client.post("/v1/batch", json={"batch": [{"type": "track", **KINDS["track"]}]}).status_code == 401
        info = next(k for k in fresh_db.keys.list() if k.name == "web")
        fresh_db.keys.revoke(info.id)
        assert client.post("/v1/track", json=KINDS["track"], auth=(write_key, "")).status_code == 401
    assert count(fresh_db, "events") == 0


def test_read_token_cannot_write(server: LiveServer, read_key: str) -> None:
    with server.client(auth=(read_key, "")) as client:
        response = client.post("/v1/track", json=KINDS["track"])
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_any_content_type_and_gzip(server: LiveServer, write_key: str) -> None:
    body = json.dumps({**KINDS["track"], "messageId": "plain"}).encode()
    batch = json.dumps({"batch": [{"type": "track", **KINDS["track"], "messageId": "gz"}]}).encode()
    with server.client(auth=(write_key, "")) as client:
        assert client.post("/v1/t", content=body, headers={"Content-Type": "text/plain"}).status_code == 200
        assert client.post("/v1/track", content=body.replace(b"plain", b"none")).status_code == 200
        response = client.post("/v1/batch", content=gzip.compress(batch), headers={"Content-Encoding": "gzip"})
        assert response.status_code == 200, response.text
        bad_gzip = client.post("/v1/batch", content=b"not gzip", headers={"Content-Encoding": "gzip"})
        assert bad_gzip.status_code == 400 and "gzip" in bad_gzip.json()["message"]
        brotli = client.post("/v1/batch", content=batch, headers={"Content-Encoding": "br"})
        assert brotli.status_code == 415
    assert {r["message_id"] for r in stored(server)} == {"plain", "none", "gz"}


def test_cors_on_tracking_paths_only(server: LiveServer) -> None:
    headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    with httpx.Client(base_url=server.url) as client:
        preflight = client.options("/v1/t", headers=headers)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        failed = client.post("/v1/t", json=KINDS["track"], headers={"Origin": "https://shop.example"})
        assert failed.status_code == 401 and failed.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-origin" not in client.get("/v1/events", headers=headers).headers


def test_bad_json_and_bad_messages_say_what_is_wrong(server: LiveServer, write_key: str) -> None:
    cases = [
        (b"{not json", "invalid_json", None),
        (b"", "invalid_json", None),
        (b"[1, 2]", "invalid_message", None),
        (json.dumps({"event": "X"}).encode(), "invalid_message", "userId"),
        (json.dumps({"userId": "u"}).encode(), "invalid_message", "event"),
        (json.dumps({"userId": {"a": 1}, "event": "X"}).encode(), "invalid_message", "userId"),
        (json.dumps({"userId": "u", "event": "X", "properties": [1]}).encode(), "invalid_message", "properties"),
    ]
    with server.client(auth=(write_key, "")) as client:
        for body, code, field in cases:
            response = client.post("/v1/track", content=body)
            assert response.status_code == 400, body
            payload = response.json()
            assert payload["code"] == code and payload["message"]
            if field:
                assert payload["details"]["field"] == field
        for kind, body, field in [
            ("alias", {"userId": "u"}, "previousId"),
            ("alias", {"previousId": "p", "anonymousId": "a"}, "userId"),
            ("group", {"userId": "u"}, "groupId"),
        ]:
            response = client.post(f"/v1/{kind}", json=body)
            assert response.status_code == 400 and response.json()["details"]["field"] == field
    assert count(server.cdp, "events") == 0


def test_null_user_id_with_anonymous_id_is_fine(server: LiveServer, write_key: str) -> None:
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/page", json={"userId": None, "anonymousId": "a-1", "name": "Home"})
    assert response.status_code == 200
    (row,) = stored(server)
    assert row["user_id"] is None and row["anonymous_id"] == "a-1" and row["event"] == "Home"


def test_batch_with_bad_messages_stores_the_good_ones(server: LiveServer, write_key: str) -> None:
    batch = [
        {"type": "track", "userId": "u", "event": "Good 1", "messageId": "g1"},
        {"type": "track", "userId": "u", "messageId": "bad-no-event"},
        "not an object",
        {"type": "explode", "userId": "u"},
        {"type": "identify", "userId": "u", "messageId": "g2"},
    ]
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_messages"
    assert [(e["index"], e["field"]) for e in body["details"]["errors"]] == [(1, "event"), (2, ""), (3, "type")]
    assert body["details"]["accepted"] == 2 and body["details"]["rejected"] == 3
    assert {r["message_id"] for r in stored(server)} == {"g1", "g2"}


def test_message_id_deduplicates(server: LiveServer, write_key: str) -> None:
    with server.client(auth=(write_key, "")) as client:
        for _ in range(3):
            assert client.post("/v1/track", json={**KINDS["track"], "messageId": "same"}).status_code == 200
        batch = [{"type": "track", **KINDS["track"], "messageId": m} for m in ("same", "new", "new")]
        assert client.post("/v1/batch", json={"batch": batch}).status_code == 200
        assert client.post("/v1/track", json=KINDS["track"]).status_code == 200  # no messageId: one is made
    rows = stored(server)
    assert [r["message_id"] for r in rows][:2] == ["same", "new"]
    assert len(rows) == 3 and rows[2]["message_id"]
    report = server.cdp.quality.report()
    row = next(r for r in report["events"] if r["event"] == "Order Completed")
    assert row["duplicates_dropped"] == 4 and row["stored"] == 3


def test_clock_skew_correction(server: LiveServer, write_key: str) -> None:
    # The device clock is 1 hour fast: it says the event happened at 12:00 and was sent at 12:05.
    original = "2030-01-01T12:00:00+00:00"
    sent = "2030-01-01T12:05:00Z"
    with server.client(auth=(write_key, "")) as client:
        before = datetime.now(UTC)
        body = {"batch": [{"type": "track", **KINDS["track"], "timestamp": original}], "sentAt": sent}
        assert client.post("/v1/batch", json=body).status_code == 200
        after = datetime.now(UTC)
    (row,) = stored(server)
    assert row["original_timestamp"] == "2030-01-01T12:00:00.000Z"
    assert row["sent_at"] == "2030-01-01T12:05:00.000Z"
    received = parse_ts(row["received_at"])
    timestamp = parse_ts(row["timestamp"])
    assert received is not None and timestamp is not None
    assert before - timedelta(seconds=1) <= received <= after + timedelta(seconds=1)
    assert received - timestamp == timedelta(minutes=5)
    report = server.cdp.quality.report()
    assert report["events"][0]["clock_skew"]["skewed_messages"] == 1


def test_any_iso_offset_and_invalid_timestamps(server: LiveServer, write_key: str) -> None:
    with server.client(auth=(write_key, "")) as client:
        body = {**KINDS["track"], "timestamp": "2024-03-10T08:00:00-05:00", "messageId": "offset"}
        assert client.post("/v1/track", json=body).status_code == 200
        body = {**KINDS["track"], "timestamp": "last tuesday", "messageId": "garbage"}
        assert client.post("/v1/track", json=body).status_code == 200
    rows = {r["message_id"]: r for r in stored(server)}
    assert rows["offset"]["timestamp"] == "2024-03-10T13:00:00.000Z"
    assert rows["garbage"]["timestamp"] == rows["garbage"]["received_at"]
    assert json.loads(rows["garbage"]["quality_flags"]) == ["invalid:timestamp"]


def test_batch_context_and_integrations_merge_into_each_message(server: LiveServer, write_key: str) -> None:
    body = {
        "batch": [
            {"type": "track", **KINDS["track"], "messageId": "m1", "context": {"ip": "own"}},
            {"type": "track", **KINDS["track"], "messageId": "m2"},
        ],
        "context": {"ip": "batch", "library": {"name": "x"}},
        "integrations": {"All": True},
    }
    with server.client(auth=(write_key, "")) as client:
        assert client.post("/v1/batch", json=body).status_code == 200
    rows = {r["message_id"]: r for r in stored(server)}
    assert json.loads(rows["m1"]["context"]) == {"ip": "own", "library": {"name": "x"}}
    assert json.loads(rows["m2"]["context"]) == {"ip": "batch", "library": {"name": "x"}}
    assert json.loads(rows["m2"]["integrations"]) == {"All": True}


def test_size_limits(server: LiveServer, write_key: str) -> None:
    big = {**KINDS["track"], "properties": {"blob": "x" * (33 * 1024)}}
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/track", json=big)
        assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
        in_batch = {"batch": [{"type": "track", **big}, {"type": "track", **KINDS["track"], "messageId": "ok"}]}
        response = client.post("/v1/batch", json=in_batch)
        assert response.status_code == 400
        assert response.json()["details"]["errors"][0]["code"] == "message_too_large"
        huge = {"batch": [{"type": "track", **KINDS["track"], "properties": {"b": "y" * 20_000}}] * 30}
        response = client.post("/v1/batch", json=huge)
        assert response.status_code == 413
        bomb = gzip.compress(orjson.dumps({"batch": [], "pad": "z" * (600 * 1024)}))
        response = client.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413
        many = {"batch": [{"type": "track", **KINDS["track"]}] * 2501}
        response = client.post("/v1/batch", json=many)
        assert response.status_code == 400 and response.json()["details"]["reason"] == "too_many_messages"
    assert [r["message_id"] for r in stored(server)] == ["ok"]


def test_identify_traits_are_normalised_and_bad_ones_flagged(server: LiveServer, write_key: str) -> None:
    traits = {"email": "  Ann@Example.COM", "phone": "(415) 555-0134", "birthday": "03/04/1985", "plan": "pro"}
    with server.client(auth=(write_key, "")) as client:
        assert client.post("/v1/identify", json={"userId": "u", "traits": traits, "messageId": "i1"}).status_code == 200
        bad = {"userId": "u", "traits": {"email": "ann@"}, "messageId": "i2"}
        assert client.post("/v1/identify", json=bad).status_code == 200
        refund = {"userId": "u", "event": "Order Completed", "properties": {"revenue": -5}, "messageId": "t1"}
        assert client.post("/v1/track", json=refund).status_code == 200
    rows = {r["message_id"]: r for r in stored(server)}
    assert json.loads(rows["i1"]["traits"]) == {
        "email": "ann@example.com",
        "phone": "+14155550134",
        "birthday": "1985-03-04",
        "plan": "pro",
    }
    assert json.loads(rows["i2"]["traits"]) == {"email": None}
    assert json.loads(rows["i2"]["quality_flags"]) == ["invalid:traits.email"]
    assert json.loads(rows["t1"]["properties"]) == {"revenue": None}
    report = server.cdp.quality.report()
    by_name = {r["event"]: r for r in report["events"]}
    assert by_name["identify"]["invalid"] == {"traits.email": 1}
    assert by_name["Order Completed"]["invalid"] == {"properties.revenue": 1}


def test_unknown_routes_and_methods_answer_json(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        missing = client.get("/v1/nothing-here")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        wrong = client.get("/v1/track")
        assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


def test_openapi_describes_the_tracking_routes(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    for path in ("/v1/track", "/v1/t", "/v1/batch", "/v1/b", "/v1/records", "/v1/events", "/v1/quality"):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/track"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "event" in body["properties"]


@given(st.datetimes(timezones=st.just(UTC)))
def test_ingest_time_format_is_format_ts(value: datetime) -> None:
    # The ingest path's own formatter must write exactly what format_ts writes (times sort as text).
    assert _iso(value) == format_ts(value)


def test_events_type_check_is_enforced_again_after_ingest(fresh_db: CDP, write_key: str) -> None:
    # Ingest skips the CHECK on events.type for its own validated rows only; the writer connection
    # must enforce it for every later statement.
    fresh_db.ingest.batch({"batch": [{"type": "track", "event": "A", "userId": "u1"}]}, write_key=write_key)

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO events (message_id, type, timestamp, received_at, source) VALUES ('m', 'bogus', '', '', 's')"
        )

    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        fresh_db.store.write(bad)
    assert count(fresh_db, "events") == 1
