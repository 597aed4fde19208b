"""The segment rule language: validation paths, every operator and nesting form, SQL == reference evaluator."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp.segments import rules
from cdp.segments.rules import COMPUTED_TRAITS, InvalidSegment, compile_rule, evaluate, validate, validate_rule
from cdp.segments.rules.model import DATE_PATTERN, THRESHOLD_OPS, TRAIT_OPS, as_instant, as_number, split_path
from cdp.timeutil import format_ts

NOW = datetime(2026, 1, 15, 12, 0, 0, 500_321, tzinfo=UTC)


def ago(**delta: float) -> str:
    return format_ts(NOW - timedelta(**delta))


# -- a real DuckDB with the three tables ----------------------------------------------------------------------


@dataclass
class Data:
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"traits": ..., "computed": ...}
    events: list[dict[str, Any]] = field(default_factory=list)
    memberships: dict[str, set[str]] = field(default_factory=dict)

    def profile(self, pid: str, traits: dict[str, Any] | None = None, **computed: Any) -> Data:
        self.profiles[pid] = {"traits": traits or {}, "computed": computed}
        return self

    def event(
        self, pid: str, name: str | None, at: str, props: dict[str, Any] | None = None, kind: str = "track"
    ) -> Data:
        self.events.append({"profile_id": pid, "type": kind, "event": name, "timestamp": at, "properties": props})
        return self


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": 1})  # tiny tables: one thread avoids scheduling overhead
    con.execute(
        "CREATE TABLE events(profile_id VARCHAR, type VARCHAR, event VARCHAR, timestamp VARCHAR, properties VARCHAR)"
    )
    con.execute("CREATE TABLE profiles(id VARCHAR, traits VARCHAR, computed VARCHAR)")
    con.execute("CREATE TABLE memberships(segment_key VARCHAR, profile_id VARCHAR)")
    return con


_CON: list[duckdb.DuckDBPyConnection] = []


def shared_connection() -> duckdb.DuckDBPyConnection:
    if not _CON:
        _CON.append(connect())
    return _CON[0]


def load(con: duckdb.DuckDBPyConnection, data: Data, *, ascii_json: bool = True) -> None:
    con.execute("DELETE FROM events")
    con.execute("DELETE FROM profiles")
    con.execute("DELETE FROM memberships")

    def dump(value: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=ascii_json)

    if data.profiles:
        con.executemany(
            "INSERT INTO profiles VALUES (?, ?, ?)",
            [[pid, dump(p["traits"]), dump(p["computed"])] for pid, p in data.profiles.items()],
        )
    if data.events:
        con.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            [[e["profile_id"], e["type"], e["event"], e["timestamp"], dump(e["properties"])] for e in data.events],
        )
    rows = [[key, pid] for key, members in data.memberships.items() for pid in sorted(members)]
    if rows:
        con.executemany("INSERT INTO memberships VALUES (?, ?)", rows)


def run_sql(
    con: duckdb.DuckDBPyConnection, rule: rules.Rule, profile_ids: Sequence[str] | None = None, **tables: str
) -> set[str]:
    compiled = compile_rule(rule, now=NOW, profile_ids=profile_ids, **tables)  # type: ignore[arg-type]
    rows = con.execute(compiled.sql, compiled.params).fetchall()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "profile ids must be distinct"
    return set(ids)


def run_eval(rule: rules.Rule, data: Data) -> set[str]:
    return evaluate(rule, profiles=data.profiles, events=data.events, memberships=data.memberships, now=NOW)


def both(rule_json: Mapping[str, Any], data: Data, *, ascii_json: bool = True) -> set[str]:
    """The members by SQL in DuckDB and by the evaluator, which must agree."""
    rule = validate_rule(rule_json)
    con = shared_connection()
    load(con, data, ascii_json=ascii_json)
    by_sql = run_sql(con, rule)
    by_eval = run_eval(rule, data)
    assert by_sql == by_eval, f"SQL {sorted(by_sql)} != evaluator {sorted(by_eval)} for {rule_json}"
    return by_sql


# -- trait operators ------------------------------------------------------------------------------------------

TRAITS = (
    Data()
    .profile(
        "p1",
        {
            "plan": "pro",
            "age": 42,
            "score": "17.5",
            "tags": ["a", "b", 3, True],
            "address": {"country": "US", "city": "Boston"},
            "vip": True,
            "signup": "2026-01-10T08:00:00Z",
            "name": "Ann O'Neil",
        },
        order_count=3,
        total_revenue=120.5,
        last_seen="2026-01-14T10:00:00.000Z",
        rfm={"recency_days": 1},
        event_counts={"Order Completed": 3},
        propensity_buyers=0.8,
    )
    .profile(
        "p2",
        {"plan": "free", "age": "19", "address": {"country": "CA"}, "vip": False, "signup": "2025-06-01"},
        order_count=0,
        total_revenue=0,
        last_seen="2025-12-01T00:00:00.000Z",
        average_order_value=None,
    )
    .profile("p3", {"plan": None, "age": "old", "tags": [], "signup": "not a date", "score": 17.5})
    .profile("p4")
    .profile("p5", {"plan": "Pro", "age": 42.0, "address": "US", "signup": "2026-01-15T13:30:00+02:00"})
)

TRAIT_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"trait": "plan", "op": "eq", "value": "pro"}, {"p1"}),
    ({"trait": "plan", "op": "neq", "value": "pro"}, {"p2", "p3", "p4", "p5"}),  # missing/null count as not pro
    ({"trait": "age", "op": "eq", "value": 42}, {"p1", "p5"}),
    ({"trait": "age", "op": "eq", "value": 19}, {"p2"}),  # "19" reads as a number
    ({"trait": "age", "op": "eq", "value": "19"}, {"p2"}),
    ({"trait": "age", "op": "eq", "value": "42"}, set()),  # a string value matches only strings
    ({"trait": "vip", "op": "eq", "value": True}, {"p1"}),
    ({"trait": "vip", "op": "eq", "value": False}, {"p2"}),
    ({"trait": "vip", "op": "neq", "value": True}, {"p2", "p3", "p4", "p5"}),
    ({"trait": "address.country", "op": "in", "value": ["US", "CA"]}, {"p1", "p2"}),
    ({"trait": "address.country", "op": "not_in", "value": ["US"]}, {"p2", "p3", "p4", "p5"}),
    ({"trait": "age", "op": "in", "value": [19, "old", True]}, {"p2", "p3"}),
    ({"trait": "age", "op": "gt", "value": 20}, {"p1", "p5"}),
    ({"trait": "age", "op": "gte", "value": 19}, {"p1", "p2", "p5"}),
    ({"trait": "age", "op": "lt", "value": 42}, {"p2"}),
    ({"trait": "age", "op": "lte", "value": 42}, {"p1", "p2", "p5"}),
    ({"trait": "plan", "op": "gt", "value": "a"}, {"p1", "p2"}),  # code point order: "Pro" < "a"
    ({"trait": "score", "op": "between", "value": [17, 18]}, {"p1", "p3"}),
    ({"trait": "score", "op": "between", "value": [17.5, 17.5]}, {"p1", "p3"}),
    ({"trait": "plan", "op": "between", "value": ["f", "p"]}, {"p2"}),
    ({"trait": "name", "op": "contains", "value": "O'Ne"}, {"p1"}),
    ({"trait": "tags", "op": "contains", "value": "a"}, {"p1"}),
    ({"trait": "tags", "op": "contains", "value": 3}, {"p1"}),
    ({"trait": "tags", "op": "contains", "value": True}, {"p1"}),
    ({"trait": "tags", "op": "contains", "value": "c"}, set()),
    ({"trait": "plan", "op": "starts_with", "value": "p"}, {"p1"}),
    ({"trait": "plan", "op": "starts_with", "value": ""}, {"p1", "p2", "p5"}),
    ({"trait": "plan", "op": "exists"}, {"p1", "p2", "p5"}),  # null is missing
    ({"trait": "plan", "op": "not_exists"}, {"p3", "p4"}),
    ({"trait": "address.city", "op": "exists"}, {"p1"}),
    ({"trait": "address.country", "op": "exists"}, {"p1", "p2"}),  # "US" on p5 is not an object
    ({"trait": "tags.0", "op": "eq", "value": "a"}, {"p1"}),  # array index
    ({"trait": "signup", "op": "before", "value": "2026-01-01"}, {"p2"}),
    ({"trait": "signup", "op": "after", "value": "2026-01-10T07:59:59.999999Z"}, {"p1", "p5"}),
    ({"trait": "signup", "op": "after", "value": "2026-01-10T10:00:00+02:00"}, {"p5"}),  # same instant: not after
    ({"trait": "signup", "op": "within_last", "value": "7d"}, {"p1", "p5"}),  # p5 is 11:30Z, before now
    ({"trait": "signup", "op": "within_last", "value": "1h"}, {"p5"}),
    ({"trait": "order_count", "op": "gte", "value": 1}, {"p1"}),  # computed traits
    ({"trait": "order_count", "op": "lt", "value": 1}, {"p2"}),
    ({"trait": "total_revenue", "op": "between", "value": [100, 200]}, {"p1"}),
    ({"trait": "last_seen", "op": "within_last", "value": "2d"}, {"p1"}),
    ({"trait": "average_order_value", "op": "not_exists"}, {"p1", "p2", "p3", "p4", "p5"}),
    ({"trait": "rfm.recency_days", "op": "lte", "value": 7}, {"p1"}),
    ({"trait": "event_counts.Order Completed", "op": "eq", "value": 3}, {"p1"}),
    ({"trait": "propensity_buyers", "op": "gt", "value": 0.5}, {"p1"}),
]


@pytest.mark.parametrize(("rule", "expected"), TRAIT_CASES, ids=[json.dumps(c[0]) for c in TRAIT_CASES])
def test_trait_operators(rule: dict[str, Any], expected: set[str]) -> None:
    assert both(rule, TRAITS) == expected


def test_nesting_and_segments() -> None:
    data = Data(memberships={"engaged": {"p2", "p3"}, "other": {"p1"}})
    for pid in ("p1", "p2", "p3", "p4"):
        data.profile(pid, {"plan": "pro" if pid in ("p1", "p2") else "free"})
    pro = {"trait": "plan", "op": "eq", "value": "pro"}
    engaged = {"in_segment": "engaged"}
    assert both(engaged, data) == {"p2", "p3"}
    assert both({"in_segment": "nobody"}, data) == set()
    assert both({"all": [pro, engaged]}, data) == {"p2"}
    assert both({"any": [pro, engaged]}, data) == {"p1", "p2", "p3"}
    assert both({"not": engaged}, data) == {"p1", "p4"}
    assert both({"not": {"any": [pro, engaged]}}, data) == {"p4"}
    assert both({"all": [{"not": pro}, {"not": {"not": engaged}}]}, data) == {"p3"}
    assert both(
        {"any": [{"all": [pro, {"in_segment": "other"}]}, {"all": [{"not": pro}, {"not": engaged}]}]}, data
    ) == {
        "p1",
        "p4",
    }


# -- event conditions -----------------------------------------------------------------------------------------


def test_event_windows_and_matching() -> None:
    data = Data()
    for pid in ("a", "b", "c", "d", "e"):
        data.profile(pid)
    data.event("a", "Signed Up", ago(days=1))
    data.event("b", "Signed Up", ago(days=10))
    data.event("c", "Signed Up", format_ts(NOW + timedelta(hours=1)))  # in the future
    data.event("d", "Pricing", ago(hours=2), kind="page")  # page names match too
    data.event("e", "Signed Up", ago(hours=1), kind="identify")  # identify never matches
    data.event("ghost", "Signed Up", ago(hours=1))  # not a live profile
    assert both({"event": "Signed Up"}, data) == {"a", "b", "c"}
    assert both({"event": "Signed Up", "within": "7d"}, data) == {"a"}
    assert both({"event": "Signed Up", "within": "2w"}, data) == {"a", "b"}
    assert both({"event": "Pricing", "within": "3h"}, data) == {"d"}
    assert both({"event": "signed up"}, data) == set()  # exact names
    assert both({"not": {"event": "Signed Up", "within": "7d"}}, data) == {"b", "c", "d", "e"}


def test_window_bounds_are_exact_at_millisecond_precision() -> None:
    # NOW is ...12:00:00.500321; a 1h window starts at 11:00:00.500321, so .500 is out and .501 is in.
    data = Data().profile("out").profile("in").profile("now").profile("after")
    data.event("out", "X", "2026-01-15T11:00:00.500Z")
    data.event("in", "X", "2026-01-15T11:00:00.501Z")
    data.event("now", "X", "2026-01-15T12:00:00.500Z")
    data.event("after", "X", "2026-01-15T12:00:00.501Z")
    assert both({"event": "X", "within": "1h"}, data) == {"in", "now"}
    # between: from inclusive, to exclusive
    window = {"event": "X", "between": ["2026-01-15T11:00:00.501Z", "2026-01-15T12:00:00.500Z"]}
    assert both(window, data) == {"in"}
    assert both({**window, "between": ["2026-01-15T11:00:00.5005Z", "2026-01-15T12:00:00.5005Z"]}, data) == {
        "in",
        "now",
    }
    assert both({**window, "between": ["2026-01-15T13:00:00.501+02:00", "2026-01-16"]}, data) == {"in", "now", "after"}


def test_thresholds_count_zero_and_aggregates() -> None:
    data = Data()
    for pid in ("none", "one", "three", "mixed"):
        data.profile(pid)
    data.event("one", "Session Started", ago(days=1), {"duration": 30})
    for hours in (1, 2, 3):
        data.event("three", "Session Started", ago(hours=hours), {"duration": 50 * hours})
    data.event("mixed", "Session Started", ago(hours=1), {"duration": "40"})
    data.event("mixed", "Session Started", ago(hours=2), {"duration": "long"})
    data.event("mixed", "Session Started", ago(hours=3), {"duration": True})
    data.event("mixed", "Session Started", ago(hours=4))
    s = {"event": "Session Started", "within": "7d"}
    assert both({**s, "count": {"op": "lt", "value": 3}}, data) == {"none", "one"}
    assert both({**s, "count": {"op": "lte", "value": 0}}, data) == {"none"}
    assert both({**s, "count": {"op": "eq", "value": 0}}, data) == {"none"}
    assert both({**s, "count": {"op": "neq", "value": 0}}, data) == {"one", "three", "mixed"}
    assert both({**s, "count": {"op": "gte", "value": 3}}, data) == {"three", "mixed"}
    assert both({**s, "count": {"op": "between", "value": [1, 3]}}, data) == {"one", "three"}
    assert both({**s, "count": {"op": "between", "value": [0, 1]}}, data) == {"none", "one"}
    assert both({"not": {**s, "count": {"op": "gte", "value": 1}}}, data) == {"none"}
    duration = {"property": "duration"}
    assert both({**s, "sum": {**duration, "op": "gt", "value": 120}}, data) == {"three"}
    assert both({**s, "sum": {**duration, "op": "lt", "value": 35}}, data) == {"none", "one"}  # sum of nothing is 0
    assert both({**s, "sum": {**duration, "op": "eq", "value": 40}}, data) == {"mixed"}  # "40" counts, the rest not
    assert both({**s, "avg": {**duration, "op": "eq", "value": 100}}, data) == {"three"}
    assert both({**s, "avg": {**duration, "op": "lt", "value": 1000}}, data) == {"one", "three", "mixed"}
    assert both({**s, "avg": {**duration, "op": "neq", "value": 1}}, data) == {"one", "three", "mixed"}  # undefined
    assert both({**s, "min": {**duration, "op": "gte", "value": 40}}, data) == {"three", "mixed"}
    assert both({**s, "max": {**duration, "op": "between", "value": [30, 40]}}, data) == {"one", "mixed"}
    both_thresholds = {**s, "count": {"op": "gte", "value": 2}, "max": {**duration, "op": "lt", "value": 100}}
    assert both(both_thresholds, data) == {"mixed"}


def test_where_filters() -> None:
    data = Data().profile("usd").profile("eur").profile("none").profile("nested")
    data.event("usd", "Order Completed", ago(days=1), {"currency": "USD", "revenue": 10})
    data.event("eur", "Order Completed", ago(days=1), {"currency": "EUR", "revenue": "20"})
    data.event("none", "Order Completed", ago(days=1), None)
    data.event("nested", "Order Completed", ago(days=1), {"cart": {"items": [{"sku": "x-1"}]}, "coupon": None})
    order = {"event": "Order Completed"}
    assert both({**order, "where": [{"property": "currency", "op": "eq", "value": "USD"}]}, data) == {"usd"}
    assert both({**order, "where": [{"property": "currency", "op": "neq", "value": "USD"}]}, data) == {
        "eur",
        "none",
        "nested",
    }
    assert both({**order, "where": [{"property": "revenue", "op": "gte", "value": 15}]}, data) == {"eur"}
    assert both({**order, "where": [{"property": "cart.items.0.sku", "op": "starts_with", "value": "x-"}]}, data) == {
        "nested"
    }
    assert both({**order, "where": [{"property": "currency", "op": "not_exists"}]}, data) == {"none", "nested"}
    assert both({**order, "where": [{"property": "coupon", "op": "exists"}]}, data) == set()  # null is missing
    assert both({**order, "where": []}, data) == {"usd", "eur", "none", "nested"}
    two = [
        {"property": "currency", "op": "in", "value": ["USD", "EUR"]},
        {"property": "revenue", "op": "lt", "value": 15},
    ]
    assert both({**order, "where": two}, data) == {"usd"}


def test_identical_conditions_are_compiled_once_and_reused() -> None:
    cond = {"event": "A", "within": "7d", "where": [{"property": "x", "op": "eq", "value": 1}]}
    rule = validate_rule({"any": [cond, {"not": cond}, {"all": [cond, {**cond, "within": "1d"}]}]})
    sql = compile_rule(rule, now=NOW).sql
    assert sql.count("e0 AS") == 1 and sql.count("e1 AS") == 1 and "e2 AS" not in sql


# -- the classic examples -------------------------------------------------------------------------------------

ENGAGED = {
    "key": "engaged",
    "name": "Engaged visitors",
    "schedule": {"every": "15m"},
    "rule": {
        "event": "Product Viewed",
        "within": "48h",
        "count": {"op": "gte", "value": 3},
        "sum": {"property": "duration", "op": "gt", "value": 120},
    },
}

HIGH_VALUE = {
    "key": "high_value",
    "name": "High-value customers",
    "description": "...",
    "schedule": {"every": "15m"},
    "rule": {
        "all": [
            {
                "event": "Order Completed",
                "within": "30d",
                "where": [{"property": "currency", "op": "eq", "value": "USD"}],
                "count": {"op": "gte", "value": 2},
                "sum": {"property": "revenue", "op": "gte", "value": 500},
            },
            {"trait": "address.country", "op": "in", "value": ["US", "CA"]},
            {"not": {"event": "Unsubscribed", "within": "90d"}},
            {"any": [{"trait": "plan", "op": "eq", "value": "pro"}, {"in_segment": "engaged"}]},
        ]
    },
}


def test_engaged() -> None:
    data = Data()
    for pid in ("yes", "short", "few", "old"):
        data.profile(pid)
    for i, seconds in enumerate((50, 50, 30)):
        data.event("yes", "Product Viewed", ago(hours=i + 1), {"duration": seconds})
        data.event("short", "Product Viewed", ago(hours=i + 1), {"duration": 40})  # sum 120: not > 120
        data.event("old", "Product Viewed", ago(hours=47 + i), {"duration": 100})  # one is 49h ago
    data.event("few", "Product Viewed", ago(hours=1), {"duration": 500})
    assert both(ENGAGED["rule"], data) == {"yes"}


def test_high_value_design_example() -> None:
    assert validate(HIGH_VALUE).to_json() == HIGH_VALUE
    data = Data(memberships={"engaged": {"engaged_ca"}})
    us = {"address": {"country": "US"}, "plan": "pro"}
    data.profile("vip", us).profile("eur", us).profile("small", us).profile("unsub", us)
    data.profile("engaged_ca", {"address": {"country": "CA"}, "plan": "free"})
    data.profile("free_us", {"address": {"country": "US"}, "plan": "free"})
    data.profile("de", {"address": {"country": "DE"}, "plan": "pro"})
    for pid in ("vip", "unsub", "engaged_ca", "free_us", "de"):
        data.event(pid, "Order Completed", ago(days=3), {"currency": "USD", "revenue": 300})
        data.event(pid, "Order Completed", ago(days=20), {"currency": "USD", "revenue": "250.50"})
    data.event("vip", "Order Completed", ago(days=40), {"currency": "USD", "revenue": 1})  # outside 30d
    data.event("eur", "Order Completed", ago(days=3), {"currency": "EUR", "revenue": 300})
    data.event("eur", "Order Completed", ago(days=4), {"currency": "EUR", "revenue": 300})
    data.event("small", "Order Completed", ago(days=3), {"currency": "USD", "revenue": 100})
    data.event("small", "Order Completed", ago(days=4), {"currency": "USD", "revenue": 100})
    data.event("unsub", "Unsubscribed", ago(days=60))
    assert both(HIGH_VALUE["rule"], data) == {"vip", "engaged_ca"}


def test_potential_churners_two_windows() -> None:
    # "fewer sessions this week than the week before", expressed with fixed thresholds over two windows
    week_ago, two_weeks_ago = NOW - timedelta(days=7), NOW - timedelta(days=14)
    by_dates = {
        "all": [
            {
                "event": "Session Started",
                "between": [format_ts(two_weeks_ago), format_ts(week_ago)],
                "count": {"op": "gte", "value": 2},
            },
            {"event": "Session Started", "within": "7d", "count": {"op": "lt", "value": 2}},
        ]
    }
    relative = {
        "all": [
            {"event": "Session Started", "within": "14d", "count": {"op": "gte", "value": 3}},
            {"event": "Session Started", "within": "7d", "count": {"op": "lt", "value": 2}},
        ]
    }
    data = Data()
    sessions = {"churning": (8, 9, 10, 3), "gone": (8, 9, 10), "steady": (1, 2, 8, 9), "new": (1,), "idle": ()}
    for pid, days in sessions.items():
        data.profile(pid)
        for d in days:
            data.event(pid, "Session Started", ago(days=d))
    assert both(by_dates, data) == {"churning", "gone"}
    assert both(relative, data) == {"churning", "gone"}


# -- validation -----------------------------------------------------------------------------------------------


def definition(rule: Any, **extra: Any) -> dict[str, Any]:
    return {"key": "seg", "name": "Segment", "rule": rule, **extra}


EVENT = {"event": "Order Completed", "within": "30d"}
BAD: list[tuple[dict[str, Any], str, str]] = [
    (definition({"all": [{"event": "X", "wihtin": "7d"}]}), "/rule/all/0/wihtin", "did you mean 'within'"),
    (definition({"trait": "plan", "op": "eq", "vaule": "pro"}), "/rule/vaule", "did you mean 'value'"),
    (definition({"evnt": "X", "within": "7d"}), "/rule/evnt", "did you mean 'event'"),
    (definition({"all": [{"trait": "plan", "op": "equals", "value": 1}]}), "/rule/all/0/op", "unknown op 'equals'"),
    (
        definition({"all": [{**EVENT, "count": {"op": "gtee", "value": 2}}]}),
        "/rule/all/0/count/op",
        "did you mean 'gte'",
    ),
    (definition({**EVENT, "count": {"op": "gte", "valu": 2}}), "/rule/count/valu", "did you mean 'value'"),
    (definition({**EVENT, "within": "30 days"}), "/rule/within", "not a duration"),
    (definition({**EVENT, "within": "0d"}), "/rule/within", "not a duration"),
    (definition({**EVENT, "within": "30s"}), "/rule/within", "m, h, d or w"),
    (definition({**EVENT, "within": 30}), "/rule/within", "a duration is a string"),
    (definition({**EVENT, "within": "99999999w"}), "/rule/within", "longer than 100 years"),
    (definition({"event": "X", "between": ["2026-01-01"]}), "/rule/between", "needs [from, to]"),
    (definition({"event": "X", "between": ["2026-01-02", "2026-01-01"]}), "/rule/between", "not before"),
    (definition({"event": "X", "between": ["2026-01-01", "yesterday"]}), "/rule/between/1", "ISO-8601"),
    (definition({**EVENT, "between": ["2026-01-01", "2026-02-01"]}), "/rule/between", "either within or between"),
    (definition({"trait": "age", "op": "between", "value": [1]}), "/rule/value", "needs [low, high]"),
    (definition({"trait": "age", "op": "between", "value": [5, 1]}), "/rule/value", "low <= high"),
    (definition({"trait": "age", "op": "between", "value": [1, "5"]}), "/rule/value", "two numbers or two strings"),
    (definition({"trait": "age", "op": "in", "value": "US"}), "/rule/value", "needs a list"),
    (definition({"trait": "age", "op": "in", "value": []}), "/rule/value", "at least one value"),
    (definition({"trait": "age", "op": "in", "value": ["a", None]}), "/rule/value/1", "exists / not_exists"),
    (definition({"trait": "age", "op": "exists", "value": True}), "/rule/value", "takes no value"),
    (definition({"trait": "age", "op": "eq"}), "/rule/value", "needs 'value'"),
    (definition({"trait": "age", "op": "eq", "value": {"a": 1}}), "/rule/value", "not an object"),
    (definition({"trait": "age", "op": "eq", "value": float("nan")}), "/rule/value", "finite number"),
    (definition({"trait": "age", "op": "gt", "value": True}), "/rule/value", "not a boolean"),
    (definition({"trait": "age", "op": "starts_with", "value": 1}), "/rule/value", "must be a string"),
    (definition({"trait": "seen", "op": "within_last", "value": "a week"}), "/rule/value", "not a duration"),
    (definition({"trait": "seen", "op": "before", "value": "01/02/2026"}), "/rule/value", "ISO-8601"),
    (definition({"trait": "seen", "op": "after", "value": "2026-02-30"}), "/rule/value", "ISO-8601"),
    (definition({"trait": "", "op": "exists"}), "/rule/trait", "must not be empty"),
    (definition({"trait": "a..b", "op": "exists"}), "/rule/trait", "empty segment"),
    (definition({"trait": "a\\b", "op": "exists"}), "/rule/trait", "backslash"),
    (definition({"trait": 7, "op": "exists"}), "/rule/trait", "must be a string"),
    (definition({**EVENT, "sum": {"op": "gt", "value": 1}}), "/rule/sum/property", "needs 'property'"),
    (definition({**EVENT, "avg": {"property": "x", "op": "gt"}}), "/rule/avg/value", "needs 'value'"),
    (definition({**EVENT, "count": {"property": "x", "op": "gt", "value": 1}}), "/rule/count/property", "no property"),
    (definition({**EVENT, "count": {"op": "gt", "value": 1.5}}), "/rule/count/value", "whole numbers"),
    (definition({**EVENT, "count": {"op": "gt", "value": True}}), "/rule/count/value", "finite number"),
    (definition({**EVENT, "count": {"op": "in", "value": [1]}}), "/rule/count/op", "unknown op 'in'"),
    (definition({**EVENT, "max": {"property": "x", "op": "between", "value": [3]}}), "/rule/max/value", "[low, high]"),
    (definition({**EVENT, "where": {"property": "x"}}), "/rule/where", "needs a list"),
    (definition({**EVENT, "where": [{"property": "x", "op": "eq", "value": 1, "x": 1}]}), "/rule/where/0/x", "unknown"),
    (definition({**EVENT, "where": [{"prop": "x", "op": "exists"}]}), "/rule/where/0/prop", "did you mean 'property'"),
    (definition({"event": "", "within": "7d"}), "/rule/event", "must not be empty"),
    (definition({"all": []}), "/rule/all", "at least one condition"),
    (definition({"any": {"trait": "x", "op": "exists"}}), "/rule/any", "needs a list"),
    (definition({"trait": "x", "op": "exists", "event": "X"}), "/rule/event", "exactly one of"),
    (definition({"not": [{"trait": "x", "op": "exists"}]}), "/rule/not", "must be a JSON object"),
    (definition({"in_segment": "Bad Key"}), "/rule/in_segment", "not a segment key"),
    (definition({}), "/rule", "needs one of"),
    (definition("plan = pro"), "/rule", "must be a JSON object"),
    ({"key": "Bad Key", "name": "x", "rule": EVENT}, "/key", "not a valid key"),
    ({"name": "x", "rule": EVENT}, "/key", "needs 'key'"),
    ({"key": "k", "rule": EVENT}, "/name", "needs 'name'"),
    ({"key": "k", "name": "x"}, "/rule", "needs a rule"),
    ({"key": "k", "name": "x", "rule": EVENT, "shedule": {"every": "1h"}}, "/shedule", "did you mean 'schedule'"),
    (definition(EVENT, schedule={"every": "1h", "cron": "* * * * *"}), "/schedule", "either"),
    (definition(EVENT, schedule={"every": "soon"}), "/schedule/every", "not a duration"),
    (definition(EVENT, schedule={"cron": "61 * * * *"}), "/schedule/cron", "crontab"),
    (definition(EVENT, schedule={"cron": "* * *"}), "/schedule/cron", "crontab"),
    (definition(EVENT, schedule={"evry": "1h"}), "/schedule/evry", "did you mean 'every'"),
    (definition(EVENT, type="rules"), "/type", "did you mean 'rule'"),
    (definition(EVENT, model={"k": 3}), "/model", "belongs to cluster"),
    ({"key": "k", "name": "x", "type": "cluster", "model": {}, "rule": EVENT}, "/rule", "remove 'rule'"),
    ({"key": "k", "name": "x", "type": "cluster"}, "/model", "needs 'model'"),
    ({"key": "k", "name": "x", "type": "propensity", "model": []}, "/model", "JSON object"),
    ({"key": "k", "name": "x", "type": "propensity", "model": {}, "select": 0.2}, "/select", "JSON object"),
]


@pytest.mark.parametrize(("bad", "path", "reason"), BAD, ids=[f"{i}:{b[1]}" for i, b in enumerate(BAD)])
def test_validation_errors_name_the_path(bad: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(InvalidSegment) as caught:
        validate(bad)
    error = caught.value
    assert error.details["path"] == path, error.message
    assert reason in error.details["reason"], error.details["reason"]
    assert error.code == "invalid_segment" and error.status == 400
    assert path in error.message and error.to_dict()["details"]["path"] == path


def test_valid_definitions_round_trip() -> None:
    good = [
        ENGAGED,
        HIGH_VALUE,
        definition({"trait": "utm\\.source", "op": "eq", "value": "x"}, description="", schedule={"cron": "0 3 * * *"}),
        definition({"event": "X", "between": ["2026-01-01", "2026-01-08T00:00:00+01:00"]}),
        definition({"not": {"in_segment": "personas.3"}}),
        {
            "key": "personas",
            "name": "Behavioural personas",
            "type": "cluster",
            "model": {"algorithm": "kmeans", "k": "auto", "features": ["rfm", "engagement"], "min_cluster_share": 0.02},
            "schedule": {"cron": "0 3 * * *"},
        },
        {
            "key": "likely_buyers",
            "name": "Likely to buy within 7 days",
            "type": "propensity",
            "model": {"target_event": "Order Completed", "horizon_days": 7, "algorithm": "logistic"},
            "select": {"top_quantile": 0.25},
        },
    ]
    for item in good:
        parsed = validate(item)
        assert parsed.to_json() == item
        assert validate(parsed.to_json()) == parsed
    personas = validate(good[5])
    assert personas.type == "cluster" and personas.rule is None and personas.model is not None
    assert validate(ENGAGED).schedule == rules.Schedule(every="15m")
    assert validate(ENGAGED).schedule.interval == timedelta(minutes=15)  # type: ignore[union-attr]
    # "type": "rule" and null description/schedule are accepted (and dropped from the canonical form)
    explicit = validate({**ENGAGED, "type": "rule", "description": None, "schedule": None})
    assert explicit.schedule is None and explicit.type == "rule"


def test_escaped_paths() -> None:
    assert split_path("a.b") == ("a", "b")
    assert split_path("utm\\.source") == ("utm.source",)
    assert split_path("back\\\\slash.x") == ("back\\slash", "x")
    assert rules.TraitCondition("a\\.b", ("a.b",), "exists").to_json() == {"trait": "a\\.b", "op": "exists"}


def test_schema_is_self_consistent() -> None:
    schema = rules.SCHEMA
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {"key", "name", "description", "schedule", "type", "rule", "model", "select",
                                         "consent"}  # fmt: skip
    assert schema["additionalProperties"] is False

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for ref in refs(schema):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in schema["$defs"]
    ops = {op for variant in schema["$defs"]["trait"]["oneOf"] for op in variant["properties"]["op"]["enum"]}
    assert ops == set(TRAIT_OPS)
    assert re.fullmatch(schema["properties"]["key"]["pattern"], "high_value")
    json.dumps(schema)  # serialisable as published


# -- dependencies ---------------------------------------------------------------------------------------------


def test_mentions() -> None:
    parsed = validate(HIGH_VALUE).rule
    assert parsed is not None
    found = rules.mentions(parsed)
    assert found.events == {"Order Completed", "Unsubscribed"}
    assert found.traits == {"address.country", "plan"}
    assert found.segments == {"engaged"}
    assert found.trait_keys() == {"address", "plan"}
    assert rules.is_time_dependent(parsed)
    assert not rules.is_time_dependent(validate_rule({"trait": "order_count", "op": "gt", "value": 1}))
    assert rules.is_computed_trait("order_count") and rules.is_computed_trait("rfm.frequency")
    assert rules.is_computed_trait("propensity_likely_buyers") and not rules.is_computed_trait("plan")


def seg(*refs: str) -> rules.Rule:
    return validate_rule({"any": [{"in_segment": r} for r in refs] or [{"trait": "x", "op": "exists"}]})


def test_cycles_and_order() -> None:
    with pytest.raises(InvalidSegment) as caught:
        rules.check_cycles({"a": seg("b"), "b": seg("a")})
    assert "a -> b -> a" in caught.value.message
    assert caught.value.details["cycle"] == ["a", "b", "a"]
    assert caught.value.details["path"] == "/rule/any/0/in_segment"
    with pytest.raises(InvalidSegment, match="a -> a"):
        rules.check_cycles({"a": seg("a")})
    with pytest.raises(InvalidSegment, match="b -> c -> d -> b"):
        rules.check_cycles({"a": seg("b"), "b": seg("c"), "c": seg("d"), "d": seg("x", "b"), "x": seg()})
    with pytest.raises(InvalidSegment) as unknown:
        rules.check_cycles(
            {
                "a": seg("b"),
                "b": validate_rule({"all": [{"trait": "x", "op": "exists"}, {"not": {"in_segment": "zz"}}]}),
            }
        )
    assert unknown.value.details["path"] == "/rule/all/1/not/in_segment"
    assert unknown.value.details["in_segment"] == "zz" and "unknown segment 'zz'" in unknown.value.message
    # children of a machine-learned segment are known through their parent
    ok = {"vip": seg("personas.2", "likely"), "personas": None, "likely": None}
    rules.check_cycles(ok)
    with pytest.raises(InvalidSegment, match=re.escape("unknown segment 'vip.2'")):
        rules.check_cycles({**ok, "x": seg("vip.2")})
    order = rules.evaluation_order(
        {
            "d": seg("c", "b"),
            "c": seg("a"),
            "b": seg("a"),
            "a": seg(),
            "e": seg(),
            "p": seg("personas.1"),
            "personas": None,
        }
    )
    assert order == ["a", "b", "c", "d", "e", "personas", "p"]
    with pytest.raises(InvalidSegment):
        rules.evaluation_order({"a": seg("b"), "b": seg("a")})


# -- safety ---------------------------------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE events; --",
    '"; DROP TABLE profiles; --',
    "back\\slash",
    "$1",
    "$.a.b",
    "x') OR 1=1 --",
    "naïve 日本 🎉",
    "tilde~0/slash~1",
    "%_*",
    "",
    "line\nbreak\ttab",
    "nul\x00byte",
]


def test_hostile_values_and_names_are_inert() -> None:
    data = Data()
    for i, text in enumerate(HOSTILE):
        data.profile(f"p{i}", {text: text, "nested": {text: [text]}, "k": text})
        data.event(f"p{i}", text, ago(hours=1), {text: text, "v": text})
    for ascii_json in (True, False):
        for i, text in enumerate(HOSTILE):
            name = text.replace("\\", "\\\\").replace(".", "\\.")
            if not name or "\x00" in name:
                continue  # not addressable as a path (validated away), still fine as a value below
            assert both({"trait": name, "op": "eq", "value": text}, data, ascii_json=ascii_json) == {f"p{i}"}
            assert both({"trait": f"nested.{name}", "op": "contains", "value": text}, data) == {f"p{i}"}
            cond = {"event": text, "where": [{"property": name, "op": "eq", "value": text}]}
            assert both(cond, data, ascii_json=ascii_json) == {f"p{i}"}
        for i, text in enumerate(HOSTILE):
            assert both({"trait": "k", "op": "in", "value": [text, "zzz"]}, data, ascii_json=ascii_json) == {f"p{i}"}
            if text:
                cond = {"event": text, "where": [{"property": "v", "op": "starts_with", "value": text}]}
                assert both(cond, data, ascii_json=ascii_json) == {f"p{i}"}
    con = connect()
    load(con, data)
    rule = validate_rule(
        {
            "all": [
                {"trait": h.replace("\\", "\\\\").replace(".", "\\."), "op": "neq", "value": h}
                for h in HOSTILE
                if h and "\x00" not in h
            ]
        }
    )
    compiled = compile_rule(rule, now=NOW)
    for text in HOSTILE:
        if text and text != "$1":
            assert text not in compiled.sql  # values and names never reach the SQL text
    con.execute(compiled.sql, compiled.params).fetchall()
    assert con.execute("SELECT count(*) FROM events").fetchone() == (len(HOSTILE),)
    assert con.execute("SELECT count(*) FROM profiles").fetchone() == (len(HOSTILE),)


@pytest.mark.parametrize(
    "name", ["events; DROP TABLE x", "ev ents", '"events"', "a.b.c.d", "1events", "", "événements"]
)
def test_table_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        compile_rule(validate_rule({"event": "X"}), now=NOW, events=name)


def test_qualified_tables_and_profile_ids() -> None:
    data = Data(memberships={"s": {"a", "c"}})
    for pid in "abcd":
        data.profile(pid, {"n": ord(pid)})
        data.event(pid, "X", ago(hours=1))
    con = connect()
    load(con, data)
    con.execute("CREATE SCHEMA other")
    for table in ("events", "profiles", "memberships"):
        con.execute(f"CREATE TABLE other.{table} AS SELECT * FROM {table}")
        con.execute(f"DELETE FROM {table}")
    rule = validate_rule({"all": [{"event": "X", "count": {"op": "lt", "value": 5}}, {"not": {"in_segment": "s"}}]})
    names = {"events": "other.events", "profiles": "other.profiles", "memberships": "other.memberships"}
    assert run_sql(con, rule, **names) == {"b", "d"}
    assert run_sql(con, rule, profile_ids=["d", "a", "zz"], **names) == {"d"}
    assert run_sql(con, rule, profile_ids=[], **names) == set()
    assert run_sql(con, rule) == set()  # the default tables are empty now


def test_values_are_bound_parameters() -> None:
    rule = validate(HIGH_VALUE).rule
    assert rule is not None
    compiled = compile_rule(rule, now=NOW)
    assert "Order Completed" not in compiled.sql and "USD" not in compiled.sql and "engaged" not in compiled.sql
    assert "/currency" not in compiled.sql and "2026" not in compiled.sql
    placeholders = {int(n) for n in re.findall(r"\$(\d+)", compiled.sql)}
    assert placeholders == set(range(1, len(compiled.params) + 1))


# -- the value readings, fuzzed against DuckDB ----------------------------------------------------------------

date_like = st.one_of(
    st.from_regex(re.compile(DATE_PATTERN), fullmatch=True),
    st.from_regex(
        r"[0-9]{4}-[01][0-9]-[0-3][0-9]"
        r"([T ][0-2][0-9]:[0-5][0-9](:[0-6][0-9](\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?",
        fullmatch=True,
    ),
    # the canonical stored form (compared as text), with invalid calendar dates and look-alikes
    st.from_regex(
        r"(20[0-9]{2}|0000|0001|9999)-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\.[0-9]{3}Z", fullmatch=True
    ),
    st.from_regex(r".{10}T.{12}Z", fullmatch=True),
    st.datetimes(datetime(2025, 12, 1), datetime(2026, 2, 1)).map(format_ts),
)
number_like = st.one_of(
    st.from_regex(r"[+-]?[0-9]{0,4}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["1e400", "-1e309", "inf", "nan", " 1", "1 ", "0x10", "1_000", "١٢", "+.5", "5.", "."]),
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(date_like, min_size=1, max_size=20),
    st.one_of(date_like, st.sampled_from(["0001-01-01T00:30+01:00", "9999-12-31T23:30-01:00"])),
    st.integers(0, 19),
    st.sampled_from(["1h", "1d", "7d", "2w"]),
)
def test_instants_agree_with_duckdb(values: list[str], bound: str, pick: int, window: str) -> None:
    data = Data()
    for i, value in enumerate(values):
        data.profile(f"p{i}", {"d": value})
    if as_instant(bound) is None:
        bound = values[pick % len(values)]  # a bound equal to a stored value, when that one is valid
    limit = as_instant(bound)
    if limit is not None:
        for op in ("before", "after"):
            expected = {
                f"p{i}"
                for i, v in enumerate(values)
                if (t := as_instant(v)) is not None and (t < limit if op == "before" else t > limit)
            }
            assert both({"trait": "d", "op": op, "value": bound}, data) == expected
    both({"trait": "d", "op": "within_last", "value": window}, data)


def test_string_tests_tell_strings_from_values_with_the_same_text() -> None:
    """A string match reads the JSON type only when a non-string could have the same text; never wrong either way."""
    values: list[Any] = ["pro", "true", True, "42", 42, "-1", -1, ["pro"], {"pro": 1}, "tru", "[1]", [1], "", None]
    data = Data()
    for i, value in enumerate(values):
        data.profile(f"p{i}", {"v": value})
    for op, expected in [("eq", "pro"), ("eq", "true"), ("eq", "42"), ("eq", "[1]"), ("neq", "pro"), ("eq", "")]:
        matching = {f"p{i}" for i, v in enumerate(values) if isinstance(v, str) and v == expected}
        got = both({"trait": "v", "op": op, "value": expected}, data)
        assert got == (matching if op == "eq" else {f"p{i}" for i in range(len(values))} - matching), (op, expected)
    for items in (["pro", "team"], ["pro", "true"], ["42"]):
        matching = {f"p{i}" for i, v in enumerate(values) if isinstance(v, str) and v in items}
        assert both({"trait": "v", "op": "in", "value": items}, data) == matching, items
    for start in ("pr", "tr", "t", "-", "[", "x"):
        matching = {f"p{i}" for i, v in enumerate(values) if isinstance(v, str) and v.startswith(start)}
        assert both({"trait": "v", "op": "starts_with", "value": start}, data) == matching, start


@pytest.mark.parametrize("days_ago", [0, 1, 2, 7])
def test_instants_with_extreme_offsets_at_the_window_edges(days_ago: int) -> None:
    """Non-canonical dates are first compared by their local day, with bounds widened by two days: offsets of
    almost a day either way, at the edges of the bounds, must still count exactly."""
    base = NOW - timedelta(days=days_ago)
    values = []
    for shift in range(-3, 4):
        d = (base + timedelta(days=shift)).strftime("%Y-%m-%d")
        values += [d, f"{d}T23:59:59.999999999", f"{d}T00:00+23:59", f"{d}T23:59-23:59", f"{d} 12:00:00-2359"]
    bounds = [base.strftime("%Y-%m-%d"), base.strftime("%Y-%m-%dT00:00-23:59"), base.strftime("%Y-%m-%dT23:59+23:59")]
    for start in range(0, len(values), 20):
        part = values[start : start + 20]
        data = Data()
        for i, value in enumerate(part):
            data.profile(f"p{i}", {"d": value})
        for bound in bounds:
            limit = as_instant(bound)
            assert limit is not None
            for op in ("before", "after"):
                expected = {
                    f"p{i}"
                    for i, v in enumerate(part)
                    if (t := as_instant(v)) is not None and (t < limit if op == "before" else t > limit)
                }
                assert both({"trait": "d", "op": op, "value": bound}, data) == expected, (op, bound)
        for window in ("1h", "1d", "2d", "3d"):
            both({"trait": "d", "op": "within_last", "value": window}, data)


@settings(max_examples=60, deadline=None)
@given(st.lists(number_like, min_size=1, max_size=20), st.integers(-100, 100))
def test_numbers_agree_with_duckdb(values: list[str], bound: int) -> None:
    data = Data()
    for i, value in enumerate(values):
        data.profile(f"p{i}", {"n": value})
    expected = {f"p{i}" for i, v in enumerate(values) if (n := as_number(v)) is not None and n >= bound}
    assert both({"trait": "n", "op": "gte", "value": bound}, data) == expected
    both({"trait": "n", "op": "eq", "value": bound}, data)


# -- random rules on random data: the compiler agrees with the evaluator --------------------------------------

SCALARS: list[Any] = ["pro", "", "42", "3.5", "a", "2026-01-10", "2026-01-15T11:30:00Z", 0, 3, 42, 3.5, True, False]
TRAIT_PATHS = ["plan", "age", "tags", "address.country", "address", "score", "signup", "we\\.ird", "tags.0"]
COMPUTED_PATHS = ["order_count", "last_seen", "rfm.recency_days", "propensity_x"]
PROP_PATHS = ["revenue", "currency", "n", "tags", "meta.kind"]
EVENT_NAMES = ["A", "B"]
DATES = [
    "2026-01-01",
    "2026-01-08T00:00:00Z",
    "2026-01-14T12:00:00.500+00:00",
    "2026-01-15T12:00:00.5005Z",
    "2026-01-16",
]
OFFSETS = [
    timedelta(0),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=7, microseconds=-321),
    timedelta(days=7, milliseconds=1),
    timedelta(days=13),
    timedelta(days=40),
    -timedelta(hours=2),
]

scalar = st.sampled_from(SCALARS)
stored = st.one_of(
    scalar,
    scalar,
    st.recursive(
        st.one_of(scalar, st.none()),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["country", "kind", "x"]), inner, max_size=2)
        ),
        max_leaves=4,
    ),
)


@st.composite
def op_value(draw: st.DrawFn, subject: str, path: str) -> dict[str, Any]:
    op = draw(st.sampled_from(TRAIT_OPS))
    node: dict[str, Any] = {subject: path, "op": op}
    if op in ("eq", "neq", "contains"):
        node["value"] = draw(scalar)
    elif op in ("in", "not_in"):
        node["value"] = draw(st.lists(scalar, min_size=1, max_size=3))
    elif op in ("gt", "gte", "lt", "lte"):
        node["value"] = draw(st.sampled_from([v for v in SCALARS if not isinstance(v, bool)]))
    elif op == "between":
        pair = draw(
            st.one_of(
                st.lists(st.sampled_from([-2, 0, 1, 3, 3.5, 42]), min_size=2, max_size=2),
                st.lists(st.sampled_from(["", "a", "free", "pro", "z"]), min_size=2, max_size=2),
            )
        )
        node["value"] = sorted(pair)
    elif op == "starts_with":
        node["value"] = draw(st.sampled_from(["", "p", "2026", "a", "4"]))
    elif op in ("before", "after"):
        node["value"] = draw(st.sampled_from(DATES))
    elif op == "within_last":
        node["value"] = draw(st.sampled_from(["30m", "1h", "1d", "7d", "2w"]))
    return node


@st.composite
def threshold(draw: st.DrawFn, measure: str) -> dict[str, Any]:
    op = draw(st.sampled_from(THRESHOLD_OPS))
    node: dict[str, Any] = {} if measure == "count" else {"property": draw(st.sampled_from(["revenue", "n"]))}
    pool = [0, 1, 2, 3] if measure == "count" else [0, 1, 2.5, 10, -1]
    node["op"] = op
    node["value"] = (
        sorted(draw(st.lists(st.sampled_from(pool), min_size=2, max_size=2)))
        if op == "between"
        else draw(st.sampled_from(pool))
    )
    return node


@st.composite
def event_condition(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {"event": draw(st.sampled_from(EVENT_NAMES))}
    if draw(st.sampled_from([True, False, False])):
        node["where"] = [
            draw(op_value("property", draw(st.sampled_from(PROP_PATHS)))) for _ in range(draw(st.integers(0, 2)))
        ]
    window = draw(st.sampled_from(["none", "within", "between"]))
    if window == "within":
        node["within"] = draw(st.sampled_from(["1h", "1d", "7d", "2w"]))
    elif window == "between":
        start, end = sorted(
            draw(st.lists(st.sampled_from(DATES), min_size=2, max_size=2, unique=True)),
            key=lambda d: as_instant(d) or 0,
        )
        node["between"] = [start, end]
    for measure in draw(st.lists(st.sampled_from(["count", "sum", "avg", "min", "max"]), unique=True, max_size=3)):
        node[measure] = draw(threshold(measure))
    return node


leaf = st.one_of(
    st.sampled_from(TRAIT_PATHS + COMPUTED_PATHS).flatmap(lambda p: op_value("trait", p)),
    event_condition(),
    st.sampled_from(["s1", "s2"]).map(lambda k: {"in_segment": k}),
)
rule_json = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        inner.map(lambda x: {"not": x}),
    ),
    max_leaves=5,
)


@st.composite
def dataset(draw: st.DrawFn) -> Data:
    data = Data()
    pids = [f"p{i}" for i in range(draw(st.integers(1, 8)))]
    for pid in pids:
        present = st.sampled_from([True, True, True, False])
        keys = ["plan", "age", "tags", "address", "score", "signup", "we.ird"]
        traits = {k: draw(stored) for k in keys if draw(present)}
        computed = {k: draw(stored) for k in ("order_count", "last_seen", "propensity_x") if draw(present)}
        if draw(st.booleans()):
            computed["rfm"] = {"recency_days": draw(st.sampled_from([0, 3, 10, "7"]))}
        data.profiles[pid] = {"traits": traits, "computed": computed}
    number = st.sampled_from([0, 1, 2.5, 10, -1, "3", "x", True, None, 0.25])
    for _ in range(draw(st.integers(0, 30))):
        props = draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries({"revenue": number, "currency": st.sampled_from(["USD", "EUR"]), "n": number}),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "revenue": number,
                        "currency": st.sampled_from(["USD", "EUR"]),
                        "n": number,
                        "tags": st.lists(scalar, max_size=2),
                        "meta": st.fixed_dictionaries({"kind": scalar}),
                    },
                ),
            )
        )
        data.event(
            draw(st.sampled_from([*pids, "ghost"])),
            draw(st.sampled_from([*EVENT_NAMES, None])),
            format_ts(NOW - draw(st.sampled_from(OFFSETS))),
            props,
            draw(st.sampled_from(["track", "track", "track", "page", "screen", "identify"])),
        )
    data.memberships = {k: set(draw(st.lists(st.sampled_from(pids), unique=True))) for k in ("s1", "s2")}
    return data


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(dataset(), st.lists(rule_json, min_size=1, max_size=3), st.data())
def test_compiled_sql_matches_the_evaluator(data: Data, rule_list: list[dict[str, Any]], draw: st.DataObject) -> None:
    con = shared_connection()
    load(con, data)
    for raw in rule_list:
        rule = validate_rule(raw)
        assert validate_rule(rule.to_json()) == rule
        expected = run_eval(rule, data)
        assert run_sql(con, rule) == expected, raw
        subset = draw.draw(st.lists(st.sampled_from([*data.profiles, "nobody"]), unique=True))
        assert run_sql(con, rule, profile_ids=subset) == expected & set(subset), raw


def test_computed_names_and_override() -> None:
    assert {"order_count", "total_revenue", "last_seen", "rfm", "event_counts"} <= COMPUTED_TRAITS
    data = Data().profile("a", {"tier": "x"}, tier="y")
    rule = validate_rule({"trait": "tier", "op": "eq", "value": "y"})
    con = shared_connection()
    load(con, data)
    assert run_sql(con, rule) == run_eval(rule, data) == set()  # a trait, unless named computed
    extra = COMPUTED_TRAITS | {"tier"}
    compiled = compile_rule(rule, now=NOW, computed=extra)
    assert {r[0] for r in con.execute(compiled.sql, compiled.params).fetchall()} == {"a"}
    assert evaluate(rule, profiles=data.profiles, events=[], memberships={}, now=NOW, computed=extra) == {"a"}


def test_naive_now_is_utc() -> None:
    rule = validate_rule({"event": "X", "within": "1d"})
    naive = NOW.replace(tzinfo=None)
    assert compile_rule(rule, now=naive) == compile_rule(rule, now=NOW)
    offset = NOW.astimezone(timezone(timedelta(hours=5)))
    assert compile_rule(rule, now=offset) == compile_rule(rule, now=NOW)
