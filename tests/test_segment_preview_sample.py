"""The sampled preview (``cdp.segments.preview_sample``): on a real store, the estimate's interval holds the
exact size, its members are real members, and a store within the bound is previewed exactly."""

from __future__ import annotations

import json
import re

import pytest

from api.console import segments as console_segments
from cdp import CDP
from cdp.segments import preview_sample
from cdp.segments.rules import validate
from cdp.timeutil import utcnow
from tests.conftest import LiveServer
from tests.console_helpers import sign_in

PEOPLE = 1200
RULE = {
    "all": [
        {"trait": "plan", "op": "eq", "value": "pro"},
        {"event": "Order Completed", "count": {"op": "gte", "value": 2}},
    ]
}


@pytest.fixture
def store(fresh_db: CDP, write_key: str) -> CDP:
    """1,200 people: every third on plan pro, every second of those (and others) with two orders."""
    batch = []
    for n in range(PEOPLE):
        batch.append({"type": "identify", "userId": f"u{n}", "traits": {"plan": "pro" if n % 3 == 0 else "free"}})
        for _ in range(2 if n % 2 == 0 else 1):
            batch.append({"type": "track", "userId": f"u{n}", "event": "Order Completed"})
        if len(batch) >= 400:
            fresh_db.ingest.batch({"batch": batch}, write_key=write_key)
            batch = []
    if batch:
        fresh_db.ingest.batch({"batch": batch}, write_key=write_key)
    fresh_db.identity.refresh_traits()
    return fresh_db


def test_wilson_interval() -> None:
    assert preview_sample.wilson(0, 0) == (0.0, 1.0)
    low, high = preview_sample.wilson(50, 1000)
    assert 0.037 < low < 0.05 < high < 0.066
    assert preview_sample.wilson(0, 100)[0] == 0.0 and preview_sample.wilson(100, 100)[1] == 1.0


def test_estimates_hold_the_exact_size(store: CDP) -> None:
    exact = store.segments.preview({"name": "p", "rule": RULE}, sample=PEOPLE)
    assert exact["exact"] is True and exact["size"] == PEOPLE // 6  # n % 6 == 0
    members = {m["profile_id"] for m in exact["sample"]}
    rule = validate({"key": "k", "name": "k", "rule": RULE}).rule
    assert rule is not None
    held = 0
    for seed in range(20):
        found = preview_sample.estimate(store.store.reader(), store.segments.engine, rule, utcnow(), 300, seed=seed)
        assert found.drawn == 300 and found.members <= members
        assert found.low <= found.size <= found.high
        held += found.low <= exact["size"] <= found.high
    assert held >= 16  # a 95 % interval: 19 of 20 expected


def test_preview_estimates_only_above_the_bound(store: CDP) -> None:
    estimated = store.segments.preview({"name": "p", "rule": RULE}, estimate_above=300)
    assert estimated["exact"] is False
    info = estimated["estimate"]
    assert info["sampled_profiles"] == 300 and info["profile_rowids"] >= PEOPLE
    assert info["low"] <= estimated["size"] <= info["high"]
    assert "SELECT" in estimated["sql"] and len(estimated["sample"]) <= 10
    full = store.segments.preview({"name": "p", "rule": RULE}, sample=PEOPLE)
    assert {m["profile_id"] for m in estimated["sample"]} <= {m["profile_id"] for m in full["sample"]}
    within = store.segments.preview({"name": "p", "rule": RULE}, estimate_above=10 * PEOPLE)
    assert within["exact"] is True and within["size"] == full["size"]


def test_console_preview_says_it_is_an_estimate(
    store: CDP, server: LiveServer, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = json.dumps({"key": "pro_buyers", "name": "Pro buyers", "rule": RULE})
    with server.client() as client:
        csrf = sign_in(client, admin_key)
        exact = client.post(
            "/console/segments/preview",
            data={"definition": definition, "csrf_token": csrf},
            headers={"X-Console-Fragment": "1", "X-CSRF-Token": csrf},
        )
        assert f'data-size="{PEOPLE // 6}"' in exact.text and "About" not in exact.text
        monkeypatch.setattr(console_segments, "PREVIEW_SAMPLE", 300)
        estimated = client.post(
            "/console/segments/preview",
            data={"definition": definition, "csrf_token": csrf},
            headers={"X-Console-Fragment": "1", "X-CSRF-Token": csrf},
        )
        text = " ".join(estimated.text.split())
        assert 'data-estimate="true"' in text and "95 % interval" in text
        assert "Estimated from a random sample of 300 profile rows" in text
        found = re.search(r'data-size="(\d+)"', text)
        low, high = (int(v.replace(",", "")) for v in re.findall(r"interval ([\d,]+) to ([\d,]+)", text)[0])
        assert found and low <= int(found.group(1)) <= high
