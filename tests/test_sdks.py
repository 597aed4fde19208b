"""Real SDKs pointed at a real server: Segment's analytics-python and RudderStack's Python SDK."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from tests.conftest import LiveServer


@pytest.fixture(params=["thread", "process"])
def ingest_writer(request: pytest.FixtureRequest) -> str:
    """Every test here runs with the writer thread and with the ingest writer process (as `cdp serve`)."""
    return str(request.param)


def _send_all(client: Any) -> None:
    client.identify("user-1", {"email": "Ada@Example.com", "first_name": "Ada"}, anonymous_id="anon-1")
    client.track("user-1", "Order Completed", {"revenue": 42.5, "currency": "USD"})
    client.page("user-1", "Docs", "Getting started", {"path": "/docs"})
    client.screen("user-1", "App", "Home")
    client.group("user-1", "acme-inc", {"plan": "enterprise"})
    client.alias("anon-1", "user-1")
    client.track("user-1", "Product Viewed", {"sku": "X"}, timestamp=datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    client.flush()


def _check(server: LiveServer, library: str) -> None:
    rows = server.cdp.store.query("SELECT * FROM events ORDER BY id")
    assert [r["type"] for r in rows] == ["identify", "track", "page", "screen", "group", "alias", "track"]
    identify, track, page, screen, group, alias, historical = rows
    assert all(r["user_id"] == "user-1" and r["source"] == "web" for r in rows)
    assert identify["anonymous_id"] == "anon-1"
    # RudderStack's SDK sends identify traits inside context.traits; Segment's at the top level.
    traits = json.loads(identify["traits"] or "null") or json.loads(identify["context"])["traits"]
    assert traits["email"] == "ada@example.com"
    assert track["event"] == "Order Completed" and json.loads(track["properties"])["revenue"] == 42.5
    assert page["event"] == "Getting started" and screen["event"] == "Home"
    assert group["group_id"] == "acme-inc" and alias["previous_id"] == "anon-1"
    assert json.loads(track["context"])["library"]["name"] == library
    assert all(r["sent_at"] and r["original_timestamp"] for r in rows)
    assert historical["timestamp"].startswith("2024-05-01T12:00:0")
    assert len({r["message_id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("use_gzip", [False, True])
def test_segment_analytics_python(server: LiveServer, write_key: str, use_gzip: bool) -> None:
    errors: list[Any] = []
    client = SegmentClient(write_key, host=server.url, gzip=use_gzip, on_error=lambda e, b: errors.append(e))
    _send_all(client)
    client.shutdown()
    assert errors == []
    _check(server, "analytics-python")


def test_rudder_sdk_python(server: LiveServer, write_key: str) -> None:
    errors: list[Any] = []
    client = RudderClient(write_key, host=server.url, on_error=lambda e, b: errors.append(e))
    _send_all(client)
    client.shutdown()
    assert errors == []
    _check(server, "analytics-python")  # RudderStack's SDK is a fork and reports that name


def test_sdk_sees_a_clear_error_for_a_bad_key(server: LiveServer) -> None:
    errors: list[Any] = []
    client = SegmentClient("wk_wrong", host=server.url, on_error=lambda e, b: errors.append(e))
    client.track("u", "X")
    client.shutdown()
    assert errors and getattr(errors[0], "status", None) == 401
    assert server.cdp.store.query("SELECT count(*) AS n FROM events")[0]["n"] == 0
