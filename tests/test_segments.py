"""Segments end to end on a real store: definitions, runs, membership diff, outbox, real time, API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cdp import CDP
from cdp.scheduler import Scheduler
from tests.conftest import LiveServer, count


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def orders(cdp: CDP, key: str, user: str, *amounts: float, days_ago: float = 1) -> None:
    cdp.ingest.batch(
        {"batch": [
            {"type": "track", "userId": user, "event": "Order Completed", "timestamp": ago(days=days_ago),
             "properties": {"revenue": amount, "currency": "USD"}}
            for amount in amounts
        ]},
        write_key=key,
    )  # fmt: skip


HIGH_VALUE = {
    "key": "high_value",
    "name": "High-value customers",
    "schedule": {"every": "15m"},
    "rule": {"all": [{"event": "Order Completed", "within": "30d", "count": {"op": "gte", "value": 2},
                      "sum": {"property": "revenue", "op": "gte", "value": 500}}]},
}  # fmt: skip
PRO = {"key": "pro", "name": "Pro plan", "rule": {"trait": "plan", "op": "eq", "value": "pro"}}


def test_compute_diff_history_and_outbox(fresh_db: CDP, write_key: str) -> None:
    orders(fresh_db, write_key, "big", 300, 250)
    orders(fresh_db, write_key, "small", 20, 30)
    orders(fresh_db, write_key, "old", 400, 400, days_ago=45)
    fresh_db.segments.create(HIGH_VALUE)
    first = fresh_db.segments.compute("high_value")
    assert (first.status, first.size, first.entered, first.exited) == ("succeeded", 1, 1, 0)
    big = fresh_db.profiles.lookup_id(user_id="big")
    assert [m["profile_id"] for m in fresh_db.segments.members("high_value").data] == [big]
    assert fresh_db.segments.of_profile(big)[0]["key"] == "high_value"
    outbox = fresh_db.store.query("SELECT type, segment_key, profile_id, payload FROM outbox")
    assert [(o["type"], o["segment_key"], o["profile_id"]) for o in outbox] == [("segment.entered", "high_value", big)]

    orders(fresh_db, write_key, "small", 500)
    second = fresh_db.segments.compute("high_value")
    assert (second.size, second.entered, second.exited) == (2, 1, 0)
    unchanged = fresh_db.segments.compute("high_value")
    assert (unchanged.entered, unchanged.exited) == (0, 0)
    assert count(fresh_db, "outbox") == 2
    history = fresh_db.segments.history("high_value").data
    assert [(h["size"], h["entered"], h["exited"], h["status"]) for h in history] == [
        (2, 0, 0, "succeeded"),
        (2, 1, 0, "succeeded"),
        (1, 1, 0, "succeeded"),
    ]
    assert all(h["duration_ms"] >= 0 and h["started_at"] for h in history)


def test_many_segments_at_once_read_only_the_events_they_need(fresh_db: CDP, write_key: str) -> None:
    """More than three segments share one session whose events table holds only the named events the rules
    match (properties only where read); each answer equals the segment computed on its own."""
    for user, amounts in (("a", (300, 250)), ("b", (20,)), ("c", (700,))):
        orders(fresh_db, write_key, user, *amounts)
    fresh_db.ingest.batch({"batch": [
        {"type": "track", "userId": "a", "event": "Product Viewed", "properties": {"sku": "x'; DROP TABLE events"}},
        {"type": "page", "userId": "b", "name": "Pricing", "properties": {"path": "/pricing"}},
        {"type": "identify", "userId": "c", "traits": {"plan": "pro"}},
        {"type": "track", "userId": "c", "event": "It's \"quoted\"", "properties": {"n": 2}},
    ]}, write_key=write_key)  # fmt: skip
    definitions = [
        HIGH_VALUE,
        PRO,
        {"key": "viewers", "name": "v", "rule": {"event": "Product Viewed",
                                                 "where": [{"property": "sku", "op": "contains", "value": "DROP"}]}},
        {"key": "pricing", "name": "p", "rule": {"event": "Pricing", "within": "1d"}},
        {"key": "quoted", "name": "q", "rule": {"event": "It's \"quoted\"", "sum": {"property": "n", "op": "gte",
                                                                                 "value": 2}}},
        {"key": "never", "name": "n", "rule": {"not": {"event": "Order Completed", "count": {"op": "gte",
                                                                                            "value": 1}}}},
    ]  # fmt: skip
    for definition in definitions:
        fresh_db.segments.create(definition)
    together = {r.segment_key: r.size for r in fresh_db.segments.compute_many()}
    members = {d["key"]: {m["profile_id"] for m in fresh_db.segments.members(d["key"]).data} for d in definitions}
    assert together == {"high_value": 1, "pro": 1, "viewers": 1, "pricing": 1, "quoted": 1, "never": 0}
    for definition in definitions:  # alone: a session of views over every event
        fresh_db.segments.compute(definition["key"])
        assert {m["profile_id"] for m in fresh_db.segments.members(definition["key"]).data} == members[
            definition["key"]
        ]


def test_exit_when_rule_changes(fresh_db: CDP, write_key: str) -> None:
    orders(fresh_db, write_key, "big", 300, 250)
    fresh_db.segments.create(HIGH_VALUE)
    fresh_db.segments.compute("high_value")
    stricter = {**HIGH_VALUE, "rule": {**HIGH_VALUE["rule"], "all": [
        {**HIGH_VALUE["rule"]["all"][0], "sum": {"property": "revenue", "op": "gte", "value": 1000}}]}}  # fmt: skip
    fresh_db.segments.update("high_value", stricter)
    result = fresh_db.segments.compute("high_value")
    assert (result.size, result.exited) == (0, 1)
    assert [o["type"] for o in fresh_db.store.query("SELECT type FROM outbox ORDER BY id")] == [
        "segment.entered",
        "segment.exited",
    ]


def test_failed_run_keeps_previous_members(fresh_db: CDP, write_key: str) -> None:
    orders(fresh_db, write_key, "big", 300, 250)
    fresh_db.segments.create(HIGH_VALUE)
    fresh_db.segments.compute("high_value")
    orders(fresh_db, write_key, "second", 300, 250)
    # A real failure inside the run's transaction: SQLite refuses the membership insert.
    fresh_db.store.write(lambda c: c.execute(
        "CREATE TRIGGER crash BEFORE INSERT ON memberships BEGIN SELECT RAISE(ABORT, 'simulated crash'); END"
    ))  # fmt: skip
    failed = fresh_db.segments.compute("high_value")
    assert failed.status == "failed" and "simulated crash" in (failed.error or "")
    assert count(fresh_db, "memberships") == 1 and count(fresh_db, "outbox") == 1
    assert fresh_db.segments.history("high_value").data[0]["status"] == "failed"
    fresh_db.store.write(lambda c: c.execute("DROP TRIGGER crash"))
    assert fresh_db.segments.compute("high_value").entered == 1


def test_in_segment_and_cycles(fresh_db: CDP, write_key: str) -> None:
    from cdp.segments.rules import InvalidSegment

    fresh_db.ingest.batch({"batch": [
        {"type": "identify", "userId": "a", "traits": {"plan": "pro"}},
        {"type": "identify", "userId": "b", "traits": {"plan": "free"}},
    ]}, write_key=write_key)  # fmt: skip
    fresh_db.identity.refresh_traits()
    fresh_db.segments.create(PRO)
    fresh_db.segments.create({"key": "not_pro", "name": "Not pro", "rule": {"not": {"in_segment": "pro"}}})
    results = {r.segment_key: r for r in fresh_db.segments.compute_many()}
    assert results["pro"].size == 1 and results["not_pro"].size == 1
    with pytest.raises(InvalidSegment, match="pro"):
        fresh_db.segments.update("pro", {**PRO, "rule": {"in_segment": "not_pro"}})
    with pytest.raises(Exception, match="not_pro"):
        fresh_db.segments.delete("pro")


def test_memberships_follow_merges(fresh_db: CDP, write_key: str) -> None:
    fresh_db.ingest.batch({"batch": [{"type": "identify", "anonymousId": "d1", "traits": {"plan": "pro"}}]},
                          write_key=write_key)  # fmt: skip
    fresh_db.identity.refresh_traits()
    fresh_db.segments.create(PRO)
    fresh_db.segments.compute("pro")
    anon = fresh_db.profiles.lookup_id(anonymous_id="d1")
    fresh_db.ingest.batch({"batch": [{"type": "track", "userId": "u", "event": "X"}]}, write_key=write_key)
    user = fresh_db.profiles.lookup_id(user_id="u")
    fresh_db.ingest.batch({"batch": [{"type": "identify", "anonymousId": "d1", "userId": "u"}]}, write_key=write_key)
    survivor = fresh_db.profiles.lookup_id(user_id="u")
    assert survivor == anon != user  # the anonymous profile is older
    assert [m["profile_id"] for m in fresh_db.segments.members("pro").data] == [survivor]
    merged = fresh_db.store.query("SELECT payload FROM outbox WHERE type = 'profile.merged'")
    assert len(merged) == 1 and user in merged[0]["payload"]


@pytest.mark.parametrize("ingest_writer", ["thread", "process"])
def test_realtime_reevaluation(fresh_db: CDP, write_key: str) -> None:
    fresh_db.segments.create(HIGH_VALUE)
    fresh_db.segments.create(PRO)
    orders(fresh_db, write_key, "rt", 300, 250)
    fresh_db.ingest.batch({"batch": [{"type": "identify", "userId": "rt", "traits": {"plan": "pro"}}]},
                          write_key=write_key)  # fmt: skip
    results = fresh_db.segments_realtime.drain()
    assert {(r.segment_key, r.entered) for r in results} == {("high_value", 1), ("pro", 1)}
    pid = fresh_db.profiles.lookup_id(user_id="rt")
    assert {s["key"] for s in fresh_db.segments.of_profile(pid)} == {"high_value", "pro"}
    assert {r["trigger"] for r in fresh_db.store.query("SELECT trigger FROM segment_runs")} == {"realtime"}


def test_schedules_survive_restart(fresh_db: CDP) -> None:
    fresh_db.segments.create(HIGH_VALUE)
    scheduler = Scheduler(fresh_db)
    assert "segment:high_value" in {j["id"] for j in scheduler.jobs()}
    fresh_db.segments.create({**PRO, "schedule": {"cron": "0 * * * *"}})
    assert "segment:pro" in {j["id"] for j in scheduler.jobs()}
    fresh_db.segments.delete("pro")
    assert "segment:pro" not in {j["id"] for j in scheduler.jobs()}


def test_segments_api(server: LiveServer, write_key: str, read_key: str, admin_key: str) -> None:
    orders(server.cdp, write_key, "big", 300, 250)
    admin = {"Authorization": f"Bearer {admin_key}"}
    reader = {"Authorization": f"Bearer {read_key}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/segments", json=HIGH_VALUE, headers=reader).status_code == 403
        created = client.post("/v1/segments", json=HIGH_VALUE, headers=admin)
        assert created.status_code == 201, created.text
        assert client.post("/v1/segments", json=HIGH_VALUE, headers=admin).status_code == 409
        typo = {**HIGH_VALUE, "key": "x", "rule": {"all": [{"event": "E", "wihtin": "3d"}]}}
        bad = client.post("/v1/segments", json=typo, headers=admin)
        assert bad.status_code == 400 and "/rule/all/0" in bad.json()["details"]["path"]
        assert client.get("/v1/segments/schema", headers=reader).json()["$schema"]
        preview = client.post("/v1/segments/preview", json={"rule": HIGH_VALUE["rule"]}, headers=reader).json()
        assert preview["size"] == 1 and preview["sample"][0]["identifiers"] and "SELECT" in preview["sql"].upper()
        run = client.post("/v1/segments/high_value/compute", headers=admin).json()
        assert run["status"] == "succeeded" and run["size"] == 1
        members = client.get("/v1/segments/high_value/members", headers=reader).json()
        assert len(members["data"]) == 1 and members["cursor"] == {"next": None, "has_more": False}
        pid = members["data"][0]["profile_id"]
        assert {"type": "user_id", "value": "big"} in members["data"][0]["identifiers"]
        segs = client.get(f"/v1/profiles/{pid}/segments", headers=reader).json()["data"]
        assert [s["key"] for s in segs] == ["high_value"] and segs[0]["entered_at"]
        assert client.get(f"/v1/profiles/{pid}/segments").status_code == 401
        writer = {"Authorization": f"Bearer {write_key}"}
        assert client.get(f"/v1/profiles/{pid}/segments", headers=writer).status_code == 403
        assert client.get("/v1/segments/high_value/history", headers=reader).json()["data"][0]["entered"] == 1
        listed = client.get("/v1/segments", headers=reader).json()["data"]
        assert [(s["key"], s["size"]) for s in listed] == [("high_value", 1)]
        assert client.put("/v1/segments/high_value", json={**HIGH_VALUE, "name": "Whales"}, headers=admin).json()[
            "name"] == "Whales"  # fmt: skip
        assert client.get("/v1/segments/nope", headers=reader).status_code == 404
        assert client.delete("/v1/segments/high_value", headers=admin).status_code == 204
        assert client.get("/v1/segments/high_value", headers=reader).status_code == 404
        assert client.get(f"/v1/profiles/{pid}/segments", headers=reader).json()["data"] == []
        assert client.get("/v1/profiles/prof_x/segments", headers=reader).status_code == 404


def test_json_body_with_a_form_content_type_is_read_as_json(server: LiveServer, admin_key: str) -> None:
    """What ``curl -d`` sends: JSON labelled as a form. Read as JSON (issue 15); a real form still gets a 400
    naming its type (tests/test_json_bodies.py)."""
    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as client:
        sent = client.post(
            "/v1/segments",
            content=b'{"key": "p", "name": "p", "rule": {"trait": "plan", "op": "exists"}}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # what curl -d sends
        assert sent.status_code == 201
        assert client.get("/v1/segments/p").json()["key"] == "p"


def test_cli_segments(fresh_db: CDP, write_key: str, tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from cdp.cli import cli

    orders(fresh_db, write_key, "big", 300, 250)
    path = tmp_path / "seg.json"
    path.write_text(json.dumps(HIGH_VALUE))
    db = str(fresh_db.settings.db)
    runner = CliRunner()
    assert runner.invoke(cli, ["segments", "create", str(path), "--db", db]).exit_code == 0
    out = runner.invoke(cli, ["segments", "compute", "--all", "--db", db])
    assert out.exit_code == 0 and "high_value: 1 members (+1 -0)" in out.stdout
    assert "high_value" in runner.invoke(cli, ["segments", "list", "--db", db]).stdout
    assert json.loads(runner.invoke(cli, ["segments", "show", "high_value", "--db", db]).stdout)["size"] == 1
    assert "user_id=big" in runner.invoke(cli, ["segments", "members", "high_value", "--db", db]).stdout
    assert runner.invoke(cli, ["segments", "compute", "--db", db]).exit_code != 0


@pytest.mark.parametrize("ingest_writer", ["thread", "process"])
def test_realtime_in_the_background(fresh_db: CDP, write_key: str) -> None:
    import time

    fresh_db.segments.create(PRO)
    fresh_db.start_background()
    fresh_db.ingest.batch({"batch": [{"type": "identify", "userId": "bg", "traits": {"plan": "pro"}}]},
                          write_key=write_key)  # fmt: skip
    pid = fresh_db.profiles.lookup_id(user_id="bg")
    deadline = time.monotonic() + 10
    while not fresh_db.segments.of_profile(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [s["key"] for s in fresh_db.segments.of_profile(pid)] == ["pro"]
