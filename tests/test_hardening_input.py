"""Hostile input gets a 4xx JSON answer or is stored exactly; never a 500, and the connection stays open.

Each case here was a 500 (or a silent change of the data) found by an outside reliability pass (issue 16).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import orjson
import pytest

from cdp import CDP
from cdp.jsonlimits import MAX_DEPTH, MESSAGE_MAX_DEPTH
from cdp.segments.rules import MAX_IN_SEGMENT_DEPTH
from tests.conftest import LiveServer, count


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_json(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("levels", [MESSAGE_MAX_DEPTH - 1, MESSAGE_MAX_DEPTH, 300, 700, 1000])
def test_deep_properties_on_track_are_a_400_or_stored(server: LiveServer, write_key: str, levels: int) -> None:
    # properties is level 2 of the message: levels + 1 in all.
    body = '{"userId": "u1", "event": "Deep", "properties": ' + nested_json(levels) + "}"
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/track", content=body.encode())
        follow = client.post("/v1/track", json={"userId": "u2", "event": "After"})  # same connection
    assert follow.status_code == 200
    if levels + 1 <= MESSAGE_MAX_DEPTH:
        assert response.status_code == 200, response.text
        stored = server.cdp.store.reader().execute("SELECT properties FROM events WHERE event = 'Deep'").fetchone()
        assert stored[0] == nested_json(levels)
    else:
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] in ("invalid_message", "invalid_json") and "deep" in body["message"]
        assert count(server.cdp, "events", "event = 'Deep'") == 0


def test_a_batch_with_one_deep_message_stores_the_others(server: LiveServer, write_key: str) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Fine", "messageId": "m1"},
            {"type": "track", "userId": "u1", "event": "Deep", "properties": nested(300)},
            {"type": "track", "userId": "u2", "event": "Fine", "messageId": "m2"},
        ]
    }
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/batch", content=json.dumps(batch))
    assert response.status_code == 400
    body = response.json()
    assert body["details"]["errors"][0]["index"] == 1
    assert body["details"]["errors"][0]["code"] == "nesting_too_deep"
    assert count(server.cdp, "events", "event = 'Fine'") == 2


def test_clock_correction_that_would_overflow_keeps_the_device_time(server: LiveServer, write_key: str) -> None:
    msg = {
        "userId": "u1",
        "event": "Skewed",
        "originalTimestamp": "0001-01-01T00:00:00Z",
        "sentAt": "9999-12-31T23:59:59Z",
    }
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/track", json=msg)
    assert response.status_code == 200, response.text
    sql = "SELECT timestamp, quality_flags FROM events WHERE event = 'Skewed'"
    row = server.cdp.store.reader().execute(sql).fetchone()
    assert row[0].startswith("0001-01-01T00:00:00")
    assert "invalid:sentAt" in orjson.loads(row[1])


def test_integers_beyond_64_bits_are_stored_exactly_as_strings(server: LiveServer, write_key: str) -> None:
    big = 2**64
    fifty = 10**49 + 7
    body = f'{{"userId": {fifty}, "event": "Big", "properties": {{"n": {big}, "ok": 12, "neg": {-(2**63) - 1}}}}}'
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/track", content=body.encode())
    assert response.status_code == 200, response.text
    user_id, properties = (
        server.cdp.store.reader().execute("SELECT user_id, properties FROM events WHERE event = 'Big'").fetchone()
    )
    assert user_id == str(fifty)
    assert orjson.loads(properties) == {"n": str(big), "ok": 12, "neg": str(-(2**63) - 1)}


def test_records_keep_big_integers_and_refuse_invalid_utf8_by_line(server: LiveServer, write_key: str) -> None:
    lines = [
        b'{"source": "crm", "external_id": "r1", "email": "a@example.com", "account": 123456789012345678901234}',
        b'{"source": "crm", "external_id": "r2", "first_name": "Bad \xff\xfe bytes"}',
        b'{"source": "crm", "external_id": "r3", "email": "c@example.com"}',
    ]
    with server.client(auth=(write_key, "")) as client:
        response = client.post(
            "/v1/records", content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"}
        )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_records"
    assert "line 2 is not valid UTF-8" in body["message"]
    stored = server.cdp.store.query("SELECT external_id, traits FROM source_records ORDER BY external_id")
    assert [r["external_id"] for r in stored] == ["r1", "r3"]
    assert orjson.loads(stored[0]["traits"])["account"] == "123456789012345678901234"


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, [1, 2**70]],
    ids=["2^64", "-2^63-1", "in-list"],
)
def test_huge_rule_numbers_are_a_400_on_post_and_put(server: LiveServer, admin_key: str, value: object) -> None:
    op = "in" if isinstance(value, list) else "gte"
    rule = {"trait": "score", "op": op, "value": value}
    with server.client(headers=auth(admin_key)) as client:
        created = client.post("/v1/segments", content=json.dumps({"key": "big", "name": "Big", "rule": rule}))
        assert created.status_code == 400, created.text
        assert created.json()["code"] == "number_out_of_range"
        assert "64-bit" in created.json()["message"]
        ok = client.post("/v1/segments", json={"key": "big", "name": "Big", "rule": {**rule, "value": 5, "op": "gte"}})
        assert ok.status_code == 201
        put = client.put("/v1/segments/big", content=json.dumps({"key": "big", "name": "Big", "rule": rule}))
        assert put.status_code == 400 and put.json()["details"]["path"].startswith("/rule/value")


def test_huge_rule_numbers_refused_by_the_library_too(fresh_db: CDP) -> None:
    from cdp.segments.rules.model import InvalidSegment

    with pytest.raises(InvalidSegment, match="64-bit"):
        fresh_db.segments.create({"key": "x", "name": "X", "rule": {"trait": "n", "op": "eq", "value": 2**64}})


def test_admin_bodies_nested_too_deep_are_a_400(server: LiveServer, admin_key: str) -> None:
    with server.client(headers=auth(admin_key)) as client:
        for levels in (MAX_DEPTH + 1, 2000):
            body = '{"url": "https://example.com", "x": ' + nested_json(levels) + "}"
            response = client.post("/v1/webhooks", content=body)
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "nesting_too_deep"


def test_in_segment_chains_are_bounded(fresh_db: CDP) -> None:
    from cdp.segments.rules.model import InvalidSegment

    fresh_db.segments.create({"key": "s0", "name": "s0", "rule": {"trait": "plan", "op": "eq", "value": "pro"}})
    for i in range(1, MAX_IN_SEGMENT_DEPTH + 1):
        fresh_db.segments.create({"key": f"s{i}", "name": f"s{i}", "rule": {"in_segment": f"s{i - 1}"}})
    with pytest.raises(InvalidSegment, match="chain of 17 in_segment references") as caught:
        fresh_db.segments.create({"key": "over", "name": "over", "rule": {"in_segment": f"s{MAX_IN_SEGMENT_DEPTH}"}})
    assert caught.value.details["limit"] == MAX_IN_SEGMENT_DEPTH
    run = fresh_db.segments.compute_many(trigger="manual")  # the longest allowed chain computes
    assert run is not None


def test_a_loop_through_a_long_chain_is_named_without_recursion() -> None:
    from cdp.segments.rules import check_cycles
    from cdp.segments.rules.model import InSegment, InvalidSegment

    rules = {f"k{i}": InSegment(f"k{i + 1}") for i in range(3000)}
    rules["k3000"] = InSegment("k0")
    with pytest.raises(InvalidSegment, match=r"loop|chain"):
        check_cycles(rules)  # type: ignore[arg-type]


def raw_http(port: int, requests: list[bytes]) -> list[bytes]:
    """Send requests one after another on one kept-alive socket; the status line of each answer."""
    out: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for request in requests:
            sock.sendall(request)
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            reader.read(length)
            out.append(status)
    return out


def test_unauthenticated_huge_body_is_refused_before_it_is_read(server: LiveServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Only the headers: the 401 comes without waiting for the 200 MB announced.
        sock.sendall(
            b"POST /v1/segments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer


@pytest.mark.parametrize("path", ["/v1/segments", "/v1/webhooks", "/v1/segments/preview"])
def test_every_route_has_a_body_limit(server: LiveServer, admin_key: str, path: str) -> None:
    limit = server.cdp.settings.max_body_bytes
    with server.client(headers=auth(admin_key)) as client:
        response = client.post(path, content=b" " * (limit + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_the_connection_survives_error_answers(server: LiveServer, admin_key: str) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    bad = json.dumps({"key": "x", "name": "x", "rule": {"trait": "n", "op": "eq", "value": 2**64}}).encode()
    post = (
        b"POST /v1/segments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + admin_key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(bad)).encode() + b"\r\n\r\n" + bad
    )
    get = b"GET /v1/segments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + admin_key.encode() + b"\r\n\r\n"
    statuses = raw_http(port, [post, get, post, get])
    assert [s.split()[1] for s in statuses] == [b"400", b"200", b"400", b"200"]


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_open(fresh_db: CDP) -> None:
    import threading
    import time

    import uvicorn

    from api import create_app
    from tests.conftest import free_port

    app = create_app(cdp=fresh_db, scheduler=False)

    @app.get("/test-only/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        boom_request = b"GET /test-only/boom HTTP/1.1\r\nHost: x\r\n\r\n"
        health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        statuses = raw_http(port, [boom_request, health, boom_request, health])
        assert [s.split()[1] for s in statuses] == [b"500", b"200", b"500", b"200"]
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/segments", "GET, POST"),
        ("PATCH", "/v1/segments/vip", "DELETE, GET, PUT"),
        ("PUT", "/v1/webhooks/wh_1", "DELETE, GET, PATCH"),
        ("DELETE", "/v1/personas/labels", "GET, POST"),
    ],
)
def test_405_names_every_method_of_the_path(server: LiveServer, method: str, path: str, allowed: str) -> None:
    with server.client() as client:
        answer = client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert answer.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/records", "/v1/webhooks"])
def test_a_wrong_key_is_refused_before_the_body_arrives(server: LiveServer, read_key: str, path: str) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # A read token cannot write: the 403 comes without waiting for the 400 KB announced.
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {read_key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 400000\r\n\r\n".encode()
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403"), answer
    assert b"connection: close" in answer.lower()


def test_a_chunked_body_over_the_limit_is_refused_as_it_is_read(server: LiveServer, admin_key: str) -> None:
    """No Content-Length to check first: the guard counts the chunks and stops at the limit."""
    limit = server.cdp.settings.max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    with server.client(headers=auth(admin_key)) as client:
        response = client.post("/v1/segments", content=chunks())
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["details"] == {"limit_bytes": limit}
    assert server.cdp.segments.list(limit=10).data == []
