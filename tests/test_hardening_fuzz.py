"""Hypothesis over tracking and segment bodies: every input is stored exactly or refused with a CDPError (a 4xx);
and text from clients reaches terminals and logs with its control characters escaped."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp import CDP
from cdp.cli import cli
from cdp.errors import CDPError
from cdp.textsafe import clean_text
from tests.conftest import LiveServer

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
odd_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Z", "Cc", "Cf", "Co")), max_size=40
)
huge_ints = st.integers(min_value=-(2**200), max_value=2**200)
odd_dates = st.one_of(
    st.sampled_from(
        ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59", "", "now", "2026-02-30"]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    odd_text,
)
scalars = st.one_of(st.none(), st.booleans(), huge_ints, st.floats(allow_nan=False, allow_infinity=False), odd_text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3))


def deep(levels: int, leaf: object) -> object:
    for _ in range(levels):
        leaf = {"a": leaf}
    return leaf


def dumps(value: Any) -> bytes:
    """JSON with integers of any size, as a client would send (orjson refuses those beyond 64 bits)."""
    return json.dumps(value, ensure_ascii=False).encode()


@FUZZ
@given(
    user=st.one_of(odd_text, huge_ints),
    event=odd_text,
    properties=st.dictionaries(odd_text, values, max_size=4),
    depth=st.integers(min_value=0, max_value=300),
    original=odd_dates,
    sent=odd_dates,
)
def test_tracking_bodies_are_stored_exactly_or_refused(
    fresh_db: CDP,
    write_key: str,
    user: object,
    event: str,
    properties: dict[str, Any],
    depth: int,
    original: str,
    sent: str,
) -> None:
    message = {
        "userId": user,
        "event": event,
        "properties": {**properties, "deep": deep(depth, 1)},
        "originalTimestamp": original,
        "sentAt": sent,
        "messageId": f"m-{hash((str(user), event, depth, original, sent, repr(properties)))}",
    }
    body = dumps(message)
    try:
        result = fresh_db.ingest.http_body("track", body, write_key=write_key)
    except CDPError as exc:
        assert 400 <= exc.status < 500, exc
        return
    if result.stored:
        row = (
            fresh_db.store.reader()
            .execute("SELECT properties FROM events WHERE message_id = ?", (message["messageId"],))
            .fetchone()
        )
        stored = orjson.loads(row[0])
        # exact: numbers beyond 64 bits come back as their digits
        expected = json.loads(body, parse_int=lambda s: int(s) if -(2**63) <= int(s) < 2**63 else s)["properties"]
        assert stored == expected


rule_values = st.one_of(
    huge_ints, st.floats(allow_nan=False), odd_text, st.lists(st.one_of(huge_ints, odd_text), max_size=3)
)


@FUZZ
@given(
    op=st.sampled_from(["eq", "neq", "in", "gt", "gte", "between", "contains", "before", "within_last", "exists"]),
    value=rule_values,
    trait=odd_text,
    depth=st.integers(min_value=0, max_value=40),
)
def test_segment_definitions_are_validated_or_refused(
    fresh_db: CDP, op: str, value: object, trait: str, depth: int
) -> None:
    rule: Any = {"trait": trait or "plan", "op": op, "value": value}
    for _ in range(depth):
        rule = {"not": rule} if depth % 2 else {"all": [rule]}
    definition = json.loads(dumps({"key": "fuzz", "name": "Fuzz", "rule": rule}))
    try:
        fresh_db.segments.preview(definition)
        created = fresh_db.segments.create(definition)
    except CDPError as exc:
        assert 400 <= exc.status < 500, exc
        return
    assert created["key"] == "fuzz"
    fresh_db.segments.delete("fuzz")


def test_events_tail_and_the_access_log_escape_control_characters(
    server: LiveServer, write_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = "Bought\x00\x1b[31m\u202egnp.exe"
    with server.client(auth=(write_key, "")) as client:
        assert client.post("/v1/track", json={"userId": "u\x07", "event": name}).status_code == 200
        caplog.set_level(logging.INFO, logger="cdp.access")
        client.get("/v1/%00%1b%E2%80%AEx")
    output = CliRunner().invoke(cli, ["events", "tail", "--db", str(server.cdp.settings.db)]).output
    assert "Bought\\x00\\x1b[31m\\u202egnp.exe" in output and "u\\x07" in output
    assert not any(ch in output for ch in "\x00\x1b\u202e\x07")
    logged = [r.getMessage() for r in caplog.records if r.name == "cdp.access"]
    assert any("/v1/\\x00\\x1b\\u202ex" in line for line in logged), logged
    assert clean_text("plain text, é, 日本") == "plain text, é, 日本"
