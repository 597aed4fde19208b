"""Consent from Segment's consent spec: stored per profile and category, most recent wins, stricter wins on
merge (conflict recorded), segments that require it (batch and real time), and webhook payloads."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from cdp import CDP
from cdp.errors import CDPError
from tests.conftest import count


def _prefs(**categories: bool) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": categories}}


NEWSLETTER = {"key": "newsletter", "name": "Newsletter", "consent": ["marketing"],
              "rule": {"trait": "plan", "op": "eq", "value": "pro"}}  # fmt: skip


def _members(cdp: CDP) -> set[str]:
    return {m["profile_id"] for m in cdp.segments.members("newsletter").data}


@pytest.mark.parametrize("ingest_writer", ["thread", "process"])
def test_withdrawn_consent_exits_in_real_time(fresh_db: CDP, write_key: str) -> None:
    cdp = fresh_db
    cdp.start_writer()
    cdp.segments.create(NEWSLETTER)
    cdp.segments_realtime.start()
    send = lambda msgs: cdp.ingest.batch({"batch": msgs}, write_key=write_key)  # noqa: E731
    send([
        {"type": "identify", "userId": "c1", "traits": {"plan": "pro"}, "context": _prefs(marketing=True)},
        {"type": "identify", "userId": "c2", "traits": {"plan": "pro"}},  # never said yes
        {"type": "identify", "userId": "c3", "traits": {"plan": "pro"}, "context": _prefs(marketing=False)},
    ])  # fmt: skip
    c1 = cdp.profiles.lookup_id(user_id="c1")
    deadline = time.monotonic() + 10
    while _members(cdp) != {c1} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _members(cdp) == {c1}
    assert cdp.profiles.get(c1)["consent"] == {"marketing": True}

    send([{"type": "track", "userId": "c1", "event": "Settings Changed", "context": _prefs(marketing=False)}])
    deadline = time.monotonic() + 10
    while _members(cdp) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _members(cdp) == set()
    exited = cdp.store.query("SELECT payload FROM outbox WHERE type = 'segment.exited'")
    assert [orjson.loads(r["payload"])["profile"]["consent"] for r in exited] == [{"marketing": False}]
    entered = cdp.store.query("SELECT payload FROM outbox WHERE type = 'segment.entered'")
    assert [orjson.loads(r["payload"])["profile"]["consent"] for r in entered] == [{"marketing": True}]


def test_most_recent_statement_wins(fresh_db: CDP, write_key: str) -> None:
    cdp = fresh_db
    cdp.ingest.batch({"batch": [
        {"type": "track", "userId": "m1", "event": "A", "timestamp": "2026-01-02T00:00:00Z",
         "context": _prefs(marketing=False, analytics=True)},
        {"type": "track", "userId": "m1", "event": "B", "timestamp": "2026-01-01T00:00:00Z",
         "context": _prefs(marketing=True)},  # older: does not override
    ]}, write_key=write_key)  # fmt: skip
    pid = cdp.profiles.lookup_id(user_id="m1")
    assert cdp.profiles.get(pid)["consent"] == {"marketing": False, "analytics": True}
    # a CRM record's consent object is a statement too (made now: the most recent)
    cdp.ingest.batch({"batch": [{"type": "identify", "userId": "m1", "traits": {"email": "m1@example.com"}}]},
                     write_key=write_key)  # fmt: skip
    cdp.ingest.upsert_records([{"source": "crm", "external_id": "r1", "email": "m1@example.com",
                                "consent": {"marketing": True}}])  # fmt: skip
    pid = cdp.profiles.lookup_id(user_id="m1")
    details = cdp.privacy.consent(pid)
    assert details["categories"]["marketing"]["granted"] is True
    assert details["categories"]["marketing"]["origin"] == "record:crm:r1"


def test_merge_keeps_the_stricter_value_and_records_the_conflict(fresh_db: CDP, write_key: str) -> None:
    cdp = fresh_db
    cdp.segments.create(NEWSLETTER)
    cdp.ingest.batch({"batch": [
        {"type": "identify", "anonymousId": "dev-1", "traits": {"plan": "pro"}, "context": _prefs(marketing=True)},
        {"type": "identify", "userId": "u-9", "context": _prefs(marketing=False, analytics=True)},
    ]}, write_key=write_key)  # fmt: skip
    cdp.segments.compute("newsletter")
    assert len(_members(cdp)) == 1
    cdp.ingest.batch({"batch": [{"type": "identify", "userId": "u-9", "anonymousId": "dev-1"}]}, write_key=write_key)
    pid = cdp.profiles.lookup_id(user_id="u-9")
    assert cdp.profiles.get(pid)["consent"] == {"marketing": False, "analytics": True}
    conflicts = cdp.privacy.consent(pid)["conflicts"]
    assert [(c["category"], c["kept"]) for c in conflicts] == [("marketing", False)]
    assert count(cdp, "profile_consent") == 2  # the merged-away profile's rows moved to the survivor
    cdp.segments.compute("newsletter")
    assert _members(cdp) == set()


def test_segment_consent_must_be_a_list_of_names(fresh_db: CDP) -> None:
    with pytest.raises(CDPError, match="/consent"):
        fresh_db.segments.create({**NEWSLETTER, "consent": "marketing"})
    with pytest.raises(CDPError, match="/consent/0"):
        fresh_db.segments.create({**NEWSLETTER, "consent": [""]})
