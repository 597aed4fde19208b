"""Segments: 50 rule segments through cdp against the same rules as hand-written DuckDB SQL, in one run.

    .venv/bin/python bench/segments.py                 # 1,000,000 profiles, 10,000,000 events
    .venv/bin/python bench/segments.py --quick         # 100,000 profiles, 1,000,000 events (smoke run)
    .venv/bin/python bench/segments.py --profiles 300000 --events 3000000 --rebuild

What it does, in order:

1. **Store** (setup, not measured): a real cdp SQLite file (our migrations, via ``CDP(Settings(db=...))``)
   with ``--profiles`` live profiles (unified ``traits`` and ``computed`` traits in the shapes cdp writes,
   plus 2% profiles merged away), their identifiers and ``--events`` events (track / page / identify, over
   the last 90 days, fixed-width UTC timestamps, unique message ids) generated in DuckDB and written through
   DuckDB's SQLite writer, secondary indexes rebuilt after the load. Cached under ``--cache-dir`` keyed by
   the scale (``--rebuild`` forces a new one); every run works on a fresh copy of it.
2. **cdp**: creates the 50 segments with ``cdp.segments.create`` and runs ``cdp.segments.compute_many``
   (all 50 in one call, as ``cdp segments compute --all`` and the scheduler do) twice: a first run that
   writes every membership, enter row, history row and outbox row, and a second run with nothing to
   change. Wall time includes the DuckDB attach and materialization. "now" is frozen at the store's build
   time + 1 h (``cdp.segments.service.utcnow`` is patched for the bench process) so the hand-written SQL uses
   the very same window bounds and reruns over the cached store give the same sizes.
3. **Hand-written DuckDB SQL** for the same 50 rules (written for this data by hand, not generated), in a
   separate process: the same ATTACH of the SQLite file read-only, the same materialization of
   ``events`` / ``profiles`` into temp tables, then the 50 queries (segments that others reference with
   ``in_segment`` are kept as temp tables). Each answer must equal the member set cdp stored, exactly;
   any difference fails the run (exit 1) and prints the differing profiles with the verdict of cdp's
   reference evaluator.
4. **Serving**: starts the real server (``cdp serve --no-scheduler``) on the store and drives
   ``GET /v1/profiles/{id}/segments`` for random member profiles at ``--rate`` requests/s for
   ``--seconds`` from another process (paced open loop over keep-alive connections); latency counts from
   the time a request was due, so queueing in the generator or the server is included.
5. Prints per-segment times (cdp first / second run, hand-written), totals, ratios, peak RSS and the
   machine load, and, last, one JSON line with every number.

Targets: cdp <= 1.5x the hand-written SQL, <= 60 s for all 50, p99 <= 10 ms at 500 requests/s.
Exit status: 0 when the run worked (targets met or not), 1 when a member set differs, a request fails or
the server cannot be run.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import math
import multiprocessing
import os
import random
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from cdp import CDP, Settings  # noqa: E402

GEN_VERSION = 1
TARGET_RATIO = 1.5
TARGET_SECONDS = 60.0
TARGET_P99_MS = 10.0
DAY_MS = 86_400_000
SPAN_DAYS = 90
NAMED_TYPES = "('track', 'page', 'screen')"


# -- time ---------------------------------------------------------------------------------------------------


def ts(moment: datetime) -> str:
    """The stored fixed-width text of an instant (``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# -- the store ----------------------------------------------------------------------------------------------


def _u(salt: str, of: str = "i") -> str:
    """A uniform number in [0, 1) from a hash of ``of`` and ``salt`` (deterministic, no RNG state)."""
    return f"((hash({of}, '{salt}') % 1000000007)::DOUBLE / 1000000007.0)"


def _pick(items: list[str], u: str) -> str:
    """One of ``items`` (SQL string literals) uniformly by ``u``."""
    return f"([{', '.join(items)}])[1 + floor({u} * {len(items)})::INTEGER]"


def _weighted(choices: list[tuple[float, str]], u: str, otherwise: str = "NULL") -> str:
    """CASE over cumulative weights: ``choices`` are (weight, SQL expression)."""
    acc, arms = 0.0, []
    for weight, expr in choices:
        acc += weight
        arms.append(f"WHEN {u} < {acc:.6f} THEN {expr}")
    return f"(CASE {' '.join(arms)} ELSE {otherwise} END)"


def _obj(fields: list[tuple[str, str]]) -> str:
    """JSON object text from (key, JSON-text expression) pairs; a NULL expression leaves the key out."""
    items = ", ".join(f"'{json.dumps(key)}:' || ({expr})" for key, expr in fields)
    return f"('{{' || array_to_string(list_filter([{items}], x -> x IS NOT NULL), ',') || '}}')"


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _lits(*items: str) -> list[str]:
    return [_q(x) for x in items]


def _tstext(ms: str) -> str:
    return f"strftime(epoch_ms(({ms})::BIGINT), '%Y-%m-%dT%H:%M:%S.%gZ')"


FIRST = _lits("Ada", "Ben", "Chloe", "Dan", "Eva", "Finn", "Grace", "Hugo", "Iris", "Jon", "Kim", "Leo", "Maya",
              "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Yuki")  # fmt: skip
LAST = _lits("Smith", "Jones", "Garcia", "Müller", "Martin", "Rossi", "Silva", "Kim", "Nguyen", "Brown", "Lopez",
             "Wilson", "Dubois", "Schmidt", "Tanaka", "Novak", "Singh", "Cohen", "O'Brien", "Berg")  # fmt: skip
COMPANIES = _lits("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka")
TITLES = _lits("VP Marketing", "VP Engineering", "Chief Data Officer", "Software Engineer", "Marketing Manager",
               "Analyst", "Founder", "Head of Growth")  # fmt: skip
TAGS = _lits("vip", "beta", "churn_risk", "partner", "early_adopter", "wholesale")
UTM = _lits("google", "newsletter", "facebook", "direct", "partner")
CITIES = {
    "US": _lits("New York", "Austin", "Seattle", "Boston", "Chicago"),
    "CA": _lits("Toronto", "Montreal", "Vancouver"),
    "GB": _lits("London", "Manchester", "Leeds"),
    "DE": _lits("Berlin", "Munich", "Hamburg"),
    "FR": _lits("Paris", "Lyon", "Nantes"),
    "BR": _lits("São Paulo", "Rio de Janeiro"),
    "IN": _lits("Bengaluru", "Mumbai"),
    "JP": _lits("Tokyo", "Osaka"),
    "AU": _lits("Sydney", "Melbourne"),
}
COUNTRIES = [(0.40, "US"), (0.08, "CA"), (0.12, "GB"), (0.10, "DE"), (0.08, "FR"), (0.06, "BR"), (0.06, "IN"),
             (0.05, "JP"), (0.05, "AU")]  # fmt: skip
TRACK = [(0.27, "Product Viewed"), (0.09, "Product Added"), (0.16, "Session Started"), (0.08, "Search"),
         (0.04, "Checkout Started"), (0.05, "Order Completed"), (0.10, "Email Opened"), (0.04, "Email Clicked"),
         (0.05, "Video Played"), (0.09, "Feature Used"), (0.015, "Signed Up"), (0.005, "Unsubscribed"),
         (0.005, "Order Refunded"), (0.005, "Subscription Cancelled")]  # fmt: skip
PAGES = [(0.30, "Home", "/"), (0.25, "Product", "/product"), (0.10, "Pricing", "/pricing"), (0.12, "Blog", "/blog"),
         (0.13, "Docs", "/docs"), (0.05, "Checkout", "/checkout"), (0.05, "Account", "/account")]  # fmt: skip
FEATURES = _lits("export", "import", "api", "sso", "dashboards", "alerts", "sharing", "reports")
REFERRERS = _lits("https://google.com/", "https://news.ycombinator.com/", "https://t.co/")
CONTEXTS = {
    "web": '{"library":{"name":"analytics.js","version":"4.1.0"},"locale":"en-US"}',
    "ios": '{"library":{"name":"analytics-ios","version":"4.1.8"},"os":{"name":"iOS","version":"17.4"}}',
    "android": '{"library":{"name":"analytics-android","version":"4.11.3"},"os":{"name":"Android","version":"14"}}',
    "server": '{"library":{"name":"analytics-python","version":"2.3.2"}}',
}


def _profile_sql(n_live: int, n_merged: int, now_ms: int) -> str:
    """Table ``p``: one row per profile index (live ones first) with its id, identifiers, traits and lifespan."""
    country = _weighted([(w, _q(c)) for w, c in COUNTRIES], _u("country"))
    city = "(CASE country " + " ".join(f"WHEN {_q(c)} THEN {_pick(cs, _u('city'))}" for c, cs in CITIES.items())
    city += " END)"
    email_domain = _weighted(
        [(0.35, "'gmail.com'"), (0.10, "'yahoo.com'"), (0.15, "'outlook.com'")],
        _u("domain"),
        _pick(_lits("acme.io", "globex.com", "initech.com", "hooli.xyz"), _u("domain2")),
    )
    age = f"(18 + floor({_u('age')} * 63)::INTEGER)"
    signup_ms = f"({now_ms} - ({_u('signup')} * 3 * 365 * {DAY_MS})::BIGINT)"
    signup = _weighted(
        [
            (0.70, f"to_json({_tstext(signup_ms)})"),
            (0.15, f"to_json(strftime(epoch_ms({signup_ms}), '%Y-%m-%d'))"),
            (0.10, f"to_json(strftime(epoch_ms({signup_ms} + 7200000), '%Y-%m-%dT%H:%M:%S') || '+02:00')"),
        ],
        _u("signup_form"),
    )
    tags = (
        f"to_json(list_distinct([{_pick(TAGS, _u('tag1'))}, {_pick(TAGS, _u('tag2'))}, {_pick(TAGS, _u('tag3'))}]"
        f"[1:1 + floor({_u('tags_n')} * 3)::INTEGER]))"
    )
    address = _obj(
        [
            ("city", f"to_json({city})"),
            ("country", "to_json(country)"),
            ("postal_code",
             f"CASE WHEN {_u('zip_p')} < 0.9 THEN to_json(lpad((hash(i, 'zip') % 99999)::VARCHAR, 5, '0')) END"),
        ]
    )  # fmt: skip
    has_work = f"{_u('work')} < 0.3"
    traits = _obj(
        [
            ("address", f"CASE WHEN {_u('addr')} < 0.97 THEN {address} END"),
            ("age", _weighted([(0.85, f"to_json({age})"), (0.05, f"to_json({age}::VARCHAR)")], _u("age_p"))),
            ("company", f"CASE WHEN {has_work} THEN to_json({_pick(COMPANIES, _u('company'))}) END"),
            ("email", "to_json(email)"),
            ("first_name", "to_json(first_name)"),
            ("language", "to_json(" + _weighted(
                [(0.45, "'en-US'"), (0.12, "'en-GB'"), (0.12, "'de-DE'"), (0.10, "'fr-FR'"), (0.08, "'pt-BR'"),
                 (0.08, "'es-ES'")], _u("lang"), "'ja-JP'") + ")"),
            ("last_name", "to_json(last_name)"),
            ("lifetime_value", f"CASE WHEN {_u('ltv_p')} < 0.6 THEN to_json(round(pow({_u('ltv')}, 3) * 5000, 2)) END"),
            ("newsletter", _weighted([(0.4, "'true'"), (0.3, "'false'")], _u("newsletter"))),
            ("phone",
             f"CASE WHEN {_u('phone')} < 0.5 THEN to_json('+1555' || lpad((i % 10000000)::VARCHAR, 7, '0')) END"),
            ("plan", "to_json(plan)"),
            ("signup_date", signup),
            ("tags", f"CASE WHEN {_u('tags')} < 0.35 THEN {tags} END"),
            ("title", f"CASE WHEN {has_work} THEN to_json({_pick(TITLES, _u('title'))}) END"),
            ("utm.source", f"CASE WHEN {_u('utm_p')} < 0.4 THEN to_json({_pick(UTM, _u('utm'))}) END"),
        ]
    )  # fmt: skip
    plan = _weighted([(0.55, "'free'"), (0.22, "'pro'"), (0.12, "'team'"), (0.06, "'enterprise'")], _u("plan"))
    span = SPAN_DAYS * DAY_MS
    return f"""
CREATE TABLE p AS
WITH base AS (
  SELECT i,
    'prof_' || substr(md5('p' || i::VARCHAR), 1, 20) AS id,
    CASE WHEN i < {n_live} AND {_u("uid")} < 0.95 THEN 'user_' || i::VARCHAR END AS user_id,
    CASE WHEN i < {n_live} AND {_u("anon")} < 0.6 THEN md5('a' || i::VARCHAR) END AS anon,
    {_pick(FIRST, _u("first"))} AS first_name,
    {_pick(LAST, _u("last"))} AS last_name,
    {plan} AS plan,
    {country} AS country,
    CASE WHEN i < {n_live} THEN (CASE WHEN {_u("f0")} < 0.4 THEN 0 ELSE ({_u("f")} * 80 * {DAY_MS})::BIGINT END) END
      AS f_ms,
    {_u("churn")} AS churn, {_u("life")} AS ul
  FROM range({n_live + n_merged}) t(i)
), named AS (
  SELECT *,
    CASE WHEN {_u("email")} < 0.92 THEN
      lower(replace(first_name, '''', '')) || '.' || lower(replace(last_name, '''', '')) || i::VARCHAR || '@'
      || {email_domain} END AS email,
    CASE WHEN anon IS NOT NULL THEN substr(anon, 1, 8) || '-' || substr(anon, 9, 4) || '-' || substr(anon, 13, 4)
      || '-' || substr(anon, 17, 4) || '-' || substr(anon, 21, 12) END AS anonymous_id,
    CASE WHEN churn < 0.3 THEN f_ms + (ul * ({span} - f_ms))::BIGINT ELSE {span} END AS l_ms
  FROM base
)
SELECT i AS idx, id, user_id, anonymous_id, email, plan, f_ms, l_ms,
  CASE WHEN i >= {n_live} THEN 'prof_' || substr(md5('p' || (hash(i, 'survivor') % {n_live})::VARCHAR), 1, 20)
    END AS merged_into,
  {traits} AS traits,
  {_tstext(f"{now_ms} - {span} - ({_u('created')} * 365 * {DAY_MS})::BIGINT")} AS created_at
FROM named
"""


def _event_sql(n_active: int, n_events: int, start_ms: int) -> str:
    """Table ``ev``: one lean row per event, in timestamp order (``seq``), with the randoms its columns use."""
    track = _weighted([(w, _q(name)) for w, name in TRACK], "un", "'Product Viewed'")
    page = _weighted([(w, _q(name)) for w, name, _ in PAGES], "un", "'Account'")
    return f"""
CREATE TABLE ev AS
WITH raw AS (
  SELECT i, floor({n_active} * pow({_u("who")}, 1.7))::BIGINT AS pi, {_u("when")} AS uw, {_u("type")} AS ut,
    {_u("name")} AS un
  FROM range({n_events}) t(i)
), timed AS (
  SELECT r.i, r.pi, {start_ms} + p.f_ms + (r.uw * (p.l_ms - p.f_ms))::BIGINT AS ts_ms,
    CASE WHEN ut < 0.28 THEN 'page' WHEN ut < 0.32 THEN 'identify' ELSE 'track' END AS type, un
  FROM raw r JOIN p ON p.idx = r.pi
), named AS (
  SELECT i, pi, ts_ms, type,
    CASE type WHEN 'track' THEN {track} WHEN 'page' THEN {page} END AS event,
    round(10 + 290 * pow({_u("a")}, 2) + CASE WHEN {_u("b")} < 0.08 THEN 400 * {_u("c")} ELSE 0 END, 2) AS rev,
    {_u("d")} AS rev_form
  FROM timed
)
SELECT row_number() OVER (ORDER BY ts_ms, i) AS seq, *,
  CASE WHEN type = 'track' AND event = 'Order Completed' AND rev_form < 0.97 THEN rev END AS order_revenue
FROM named
"""


def _properties_sql() -> str:
    """The ``properties`` JSON of an ``ev`` row (by event name), with the odd numeric string and missing key."""
    ua, ub, uc, ud, ue, uf = (_u(s) for s in "ABCDEF")
    sku = "'SKU-' || lpad(floor(pow({u}, 1.5) * 5000)::INTEGER::VARCHAR, 5, '0')"
    price = f"to_json(round(5 + 195 * pow({ub}, 2), 2))"
    revenue = "(CASE WHEN rev_form < 0.93 THEN to_json(rev) WHEN rev_form < 0.97 THEN to_json(rev::VARCHAR) END)"
    currency = _weighted([(0.70, "'\"USD\"'"), (0.15, "'\"EUR\"'"), (0.10, "'\"GBP\"'")], ue)
    coupon = _weighted([(0.2, f"to_json({_pick(_lits('SPRING10', 'WELCOME', 'VIP20', 'FREESHIP'), uc)})"),
                        (0.1, "'null'")], uf)  # fmt: skip
    skus = (
        f"to_json(list_distinct([{sku.format(u=ua)}, {sku.format(u=ub)}, {sku.format(u=uc)}]"
        f"[1:1 + floor({ud} * 3)::INTEGER]))"
    )
    seconds = f"(10 + floor(pow({ua}, 2) * 1800)::INTEGER)"
    by_event = {
        "Product Viewed": [("sku", f"to_json({sku.format(u=ua)})"),
                           ("category", f"to_json({_pick(_lits('shoes', 'shirts', 'bags', 'hats', 'socks'), uc)})"),
                           ("price", price), ("duration", f"to_json(5 + floor({ud} * 60)::INTEGER)")],
        "Product Added": [("sku", f"to_json({sku.format(u=ua)})"), ("price", price),
                          ("quantity", f"to_json(1 + floor({uc} * 3)::INTEGER)")],
        "Session Started": [("device", f"to_json({_pick(_lits('desktop', 'mobile', 'mobile', 'tablet'), uc)})"),
                            ("duration",
                             f"CASE WHEN {ud} < 0.97 THEN to_json({seconds}) ELSE to_json({seconds}::VARCHAR) END")],
        "Search": [("query", f"to_json({_pick(_lits('red shoes', 'gift', 'sale', 'bag', 'socks'), uc)})"),
                   ("results", f"to_json(floor({ub} * 50)::INTEGER)")],
        "Checkout Started": [("revenue", "to_json(rev)"), ("currency", currency)],
        "Order Completed": [("order_id", "to_json('ord_' || i::VARCHAR)"), ("revenue", revenue), ("currency", currency),
                            ("coupon", coupon), ("skus", skus), ("items", f"to_json(1 + floor({ud} * 3)::INTEGER)")],
        "Order Refunded": [("order_id", "to_json('ord_' || (i - 1000)::VARCHAR)"), ("revenue", "to_json(rev)")],
        "Email Opened": [("campaign", f"to_json({_pick(_lits('spring_sale', 'welcome', 'digest', 'winback'), uc)})"),
                         ("email_id", f"to_json('em_' || floor({ua} * 500)::INTEGER::VARCHAR)")],
        "Email Clicked": [("campaign", f"to_json({_pick(_lits('spring_sale', 'welcome', 'digest', 'winback'), uc)})"),
                          ("email_id", f"to_json('em_' || floor({ua} * 500)::INTEGER::VARCHAR)")],
        "Video Played": [("video_id", f"to_json('vid_' || floor({ua} * 200)::INTEGER::VARCHAR)"),
                         ("duration", f"CASE WHEN {ud} < 0.97 THEN to_json(30 + floor(pow({ub}, 2) * 1800)::INTEGER)"
                                      f" ELSE to_json(round(30 + {ub} * 600, 1)) END")],
        "Feature Used": [("feature", f"to_json({_pick(FEATURES, uc)})")],
        "Signed Up": [("method", f"to_json({_pick(_lits('email', 'google', 'github'), uc)})")],
        "Unsubscribed": [("list", "'\"newsletter\"'")],
        "Subscription Cancelled": [("plan", f"to_json({_pick(_lits('pro', 'team', 'enterprise'), uc)})"),
                                   ("reason", f"to_json({_pick(_lits('price', 'features', 'other'), ub)})")],
    }  # fmt: skip
    arms = [f"WHEN type = 'track' AND event = {_q(name)} THEN {_obj(fields)}" for name, fields in by_event.items()]
    paths = "(CASE event " + " ".join(f"WHEN {_q(name)} THEN {_q(path)}" for _, name, path in PAGES) + " END)"
    page = _obj(
        [
            ("path", f"to_json({paths})"),
            ("url", f"to_json('https://shop.example.com' || {paths})"),
            ("title", "to_json(event)"),
            ("referrer", f"CASE WHEN {ua} < 0.4 THEN to_json({_pick(REFERRERS, ub)}) END"),
            ("duration", f"CASE WHEN {uc} < 0.97 THEN to_json(1 + floor(pow({ud}, 2) * 600)::INTEGER) END"),
        ]
    )  # fmt: skip
    arms.append(f"WHEN type = 'page' THEN {page}")
    return "(CASE " + " ".join(arms) + " END)"


def _computed_sql(now_ms: int) -> str:
    """Table ``comp``: computed traits per profile with events, as ``cdp.identity.traits.computed_rows`` makes."""
    days = f"round(({now_ms} - {{ms}}) / {DAY_MS}.0, 2)"
    return f"""
CREATE TABLE comp AS
WITH agg AS (
  SELECT pi, min(ts_ms) AS first_ms, max(ts_ms) AS last_ms, count(*) AS n,
    count(*) FILTER (WHERE type = 'track' AND event = 'Order Completed') AS orders,
    coalesce(sum(order_revenue), 0) AS revenue,
    max(ts_ms) FILTER (WHERE type = 'track' AND event = 'Order Completed') AS last_order_ms
  FROM ev GROUP BY pi
), counts AS (
  SELECT pi, json_group_object(event, n) AS ec
  FROM (SELECT pi, event, count(*) AS n FROM ev WHERE type = 'track' GROUP BY pi, event) GROUP BY pi
)
SELECT agg.pi, json_object(
  'first_seen', {_tstext("first_ms")}, 'last_seen', {_tstext("last_ms")}, 'event_count', n,
  'event_counts', coalesce(counts.ec, '{{}}'::JSON), 'order_count', orders, 'total_revenue', round(revenue, 2),
  'average_order_value', CASE WHEN orders > 0 THEN round(revenue / orders, 2) END,
  'last_order_at', CASE WHEN last_order_ms IS NOT NULL THEN {_tstext("last_order_ms")} END,
  'days_since_last_order', CASE WHEN last_order_ms IS NOT NULL THEN {days.format(ms="last_order_ms")} END,
  'rfm', json_object('recency_days', {days.format(ms="coalesce(last_order_ms, last_ms)")}, 'frequency', orders,
                     'monetary', round(revenue, 2))
)::VARCHAR AS computed
FROM agg LEFT JOIN counts USING (pi)
"""


def _load_extension(con: duckdb.DuckDBPyConnection) -> None:
    from duckdb_extensions import import_extension

    import_extension("sqlite_scanner")
    con.execute("LOAD sqlite_scanner")


def build_store(path: Path, n_live: int, n_events: int, now: datetime, log: Callable[[str], None]) -> dict[str, Any]:
    """Create the cdp store at ``path`` (a new file) and fill it; returns what was built."""
    started = time.perf_counter()
    now_ms = epoch_ms(now)
    start_ms = now_ms - SPAN_DAYS * DAY_MS
    n_merged = n_live // 50
    n_active = int(n_live * 0.85)
    with CDP(Settings(db=path, scheduler_enabled=False)):
        pass  # the schema, by our migrations
    gc.collect()  # a connection of CDP's may wait for the collector; switching journal mode needs it closed
    conn = sqlite3.connect(path, isolation_level=None)
    # Secondary indexes are rebuilt after the load: one sort beats millions of random B-tree inserts.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN ('events', 'identifiers')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.execute("PRAGMA journal_mode=DELETE")  # no 4 GB write-ahead log for the bulk load
    conn.close()

    con = duckdb.connect()
    tmp = path.parent / "duckdb_tmp"
    con.execute(f"SET temp_directory = {_q(str(tmp))}")
    con.execute("SET memory_limit = '6GB'")
    con.execute("SET enable_progress_bar = false")
    _load_extension(con)
    t = time.perf_counter()
    con.execute(_profile_sql(n_live, n_merged, now_ms))
    con.execute(_event_sql(n_active, n_events, start_ms))
    con.execute(_computed_sql(now_ms))
    log(f"  generated in DuckDB: {time.perf_counter() - t:.1f} s")
    now_text = ts(now)
    t = time.perf_counter()
    con.execute(f"ATTACH {_q(str(path))} AS s (TYPE sqlite)")
    con.execute(f"""
INSERT INTO s.profiles (id, created_at, updated_at, merged_into, traits, computed, refreshed_at)
SELECT id, created_at, {_q(now_text)}, merged_into, traits, coalesce(comp.computed, '{{}}'), {_q(now_text)}
FROM p LEFT JOIN comp ON comp.pi = p.idx ORDER BY id  -- comp: live profiles with events only
""")
    con.execute("""
INSERT INTO s.identifiers (type, value, profile_id, shared, first_seen)
SELECT type, value, id, 0, created_at FROM (
  SELECT 'user_id' AS type, user_id AS value, id, created_at FROM p WHERE user_id IS NOT NULL
  UNION ALL SELECT 'email', email, id, created_at FROM p WHERE email IS NOT NULL AND merged_into IS NULL
  UNION ALL SELECT 'anonymous_id', anonymous_id, id, created_at FROM p WHERE anonymous_id IS NOT NULL
) ORDER BY type, value
""")
    log(f"  profiles and identifiers written: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    source = _weighted([(0.6, "'web'"), (0.2, "'ios'"), (0.15, "'android'")], _u("source"), "'server'")
    context = "(CASE source " + " ".join(f"WHEN {_q(k)} THEN {_q(v)}" for k, v in CONTEXTS.items()) + " END)"
    identify = _obj([("email", "to_json(p.email)"), ("plan", "to_json(p.plan)")])
    message_id = "md5('m' || ev.i::VARCHAR)"
    chunk = 1_000_000
    for low in range(1, n_events + 1, chunk):
        con.execute(f"""
INSERT INTO s.events (id, message_id, type, event, user_id, anonymous_id, profile_id, timestamp, original_timestamp,
                      sent_at, received_at, properties, traits, context, source)
SELECT seq, substr(mid, 1, 8) || '-' || substr(mid, 9, 4) || '-' || substr(mid, 13, 4) || '-' || substr(mid, 17, 4)
    || '-' || substr(mid, 21, 12),
  type, event, user_id, anonymous_id, profile_id, t, t, t, {_tstext("ts_ms + hash(i, 'recv') % 1500")},
  properties, traits, {context}, source
FROM (
  SELECT ev.*, {message_id} AS mid, p.id AS profile_id, p.anonymous_id,
    CASE WHEN ev.type = 'page' AND {_u("anon_page", "ev.i")} < 0.5 AND p.anonymous_id IS NOT NULL THEN NULL
      ELSE p.user_id END AS user_id,
    {_tstext("ts_ms")} AS t, {_properties_sql()} AS properties,
    CASE WHEN ev.type = 'identify' THEN {identify} END AS traits,
    {source} AS source
  FROM ev JOIN p ON p.idx = ev.pi
  WHERE seq >= {low} AND seq < {low + chunk}
) ORDER BY seq
""")
        log(f"  events written: {min(low + chunk - 1, n_events):,} ({time.perf_counter() - t:.1f} s)")
    counts = {
        "profiles_live": n_live,
        "profiles_merged": n_merged,
        "profiles_with_events": con.execute("SELECT count(*) FROM comp").fetchone()[0],  # type: ignore[index]
        "events": n_events,
        "identifiers": con.execute("SELECT count(*) FROM s.identifiers").fetchone()[0],  # type: ignore[index]
    }
    con.close()
    shutil.rmtree(tmp, ignore_errors=True)

    t = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA cache_size=-1000000")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute(
        "INSERT INTO resolution_state (key, value) VALUES ('traits_event_id', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(n_events),),
    )  # traits are up to date with every event: compute_many's refresh finds nothing stale
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    log(f"  indexes rebuilt: {time.perf_counter() - t:.1f} s")
    return {**counts, "built_at": now_text, "build_seconds": round(time.perf_counter() - started, 1)}


# -- the 50 segments: the public JSON, and the same rule written by hand in DuckDB SQL -------------------------
#
# Hand-written SQL reads the temp tables ``events(profile_id, type, event, timestamp, properties)`` and
# ``profiles(id, traits, computed)`` (live profiles) materialized from the SQLite store, and ``seg_<key>``
# (column profile_id) for segments used through in_segment. It is written for this data the way an analyst
# would: ``->>`` and TRY_CAST for numbers (numeric strings count as numbers, as in the rule language),
# literal window bounds, GROUP BY / HAVING, IN / NOT IN / EXCEPT / UNION.


@dataclass(frozen=True)
class Segment:
    definition: dict[str, Any]
    hand: str

    @property
    def key(self) -> str:
        return str(self.definition["key"])


def segments(now: datetime) -> list[Segment]:
    """The 50 segments at ``now`` (whole milliseconds), dependencies before the segments that use them."""
    N = ts(now)

    def ago(**delta: float) -> str:
        return ts(now - timedelta(**delta))

    def win(**delta: float) -> str:
        return f"timestamp BETWEEN '{ago(**delta)}' AND '{N}'"

    two_years_ago = (now - timedelta(days=730)).strftime("%Y-%m-%d")
    quarter_start = (now - timedelta(days=90) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"
    week_ago, two_weeks_ago, month_ago, two_months_ago = ago(days=7), ago(days=14), ago(days=30), ago(days=60)
    age = "TRY_CAST(traits->>'$.age' AS DOUBLE)"
    signup = "TRY_CAST(traits->>'$.signup_date' AS TIMESTAMPTZ)"
    revenue = "TRY_CAST(properties->>'$.revenue' AS DOUBLE)"
    duration = "TRY_CAST(properties->>'$.duration' AS DOUBLE)"
    orders = "type = 'track' AND event = 'Order Completed'"
    sessions = "type = 'track' AND event = 'Session Started'"

    def seg(key: str, name: str, rule: dict[str, Any], hand: str) -> Segment:
        return Segment({"key": key, "name": name, "rule": rule}, hand.strip())

    def trait(path: str, op: str, value: Any = None) -> dict[str, Any]:
        return {"trait": path, "op": op} if value is None else {"trait": path, "op": op, "value": value}

    return [
        # -- traits: every op family ------------------------------------------------------------------------
        seg("pro_plan", "Pro plan", trait("plan", "eq", "pro"),
            "SELECT id FROM profiles WHERE (traits->>'$.plan') = 'pro'"),
        seg("paid_plans", "Any paid plan", trait("plan", "in", ["pro", "team", "enterprise"]),
            "SELECT id FROM profiles WHERE (traits->>'$.plan') IN ('pro', 'team', 'enterprise')"),
        seg("not_free", "Not on the free plan (or no plan)", trait("plan", "neq", "free"),
            "SELECT id FROM profiles WHERE (traits->>'$.plan') IS DISTINCT FROM 'free'"),
        seg("outside_north_america", "Outside the US and Canada", trait("address.country", "not_in", ["US", "CA"]),
            "SELECT id FROM profiles WHERE coalesce(traits->>'$.address.country', '') NOT IN ('US', 'CA')"),
        seg("age_30_to_45", "Aged 30 to 45", trait("age", "between", [30, 45]),
            f"SELECT id FROM profiles WHERE {age} BETWEEN 30 AND 45"),
        seg("age_extremes", "Under 21 or 70 and over",
            {"any": [trait("age", "lt", 21), trait("age", "gte", 70)]},
            f"SELECT id FROM profiles WHERE {age} < 21 OR {age} >= 70"),
        seg("gmail_users", "Gmail addresses", trait("email", "contains", "@gmail."),
            "SELECT id FROM profiles WHERE contains(traits->>'$.email', '@gmail.')"),
        seg("vip_tagged", "Tagged vip", trait("tags", "contains", "vip"),
            "SELECT id FROM profiles WHERE list_contains(json_extract_string(traits, '$.tags[*]'), 'vip')"),
        seg("english_speakers", "English speakers", trait("language", "starts_with", "en-"),
            "SELECT id FROM profiles WHERE starts_with(traits->>'$.language', 'en-')"),
        seg("no_email", "No email address", trait("email", "not_exists"),
            "SELECT id FROM profiles WHERE (traits->>'$.email') IS NULL"),
        seg("newsletter_optin", "Newsletter opt-in", trait("newsletter", "eq", True),
            "SELECT id FROM profiles WHERE (traits->>'$.newsletter') = 'true'"),
        seg("recent_signups", "Signed up in the last 30 days", trait("signup_date", "within_last", "30d"),
            f"SELECT id FROM profiles WHERE {signup} BETWEEN TIMESTAMPTZ '{ago(days=30)}' AND TIMESTAMPTZ '{N}'"),
        seg("early_adopters", "Signed up over two years ago", trait("signup_date", "before", two_years_ago),
            f"SELECT id FROM profiles WHERE {signup} < TIMESTAMPTZ '{two_years_ago}'"),
        seg("signed_up_this_quarter", "Signed up in the last quarter", trait("signup_date", "after", quarter_start),
            f"SELECT id FROM profiles WHERE {signup} > TIMESTAMPTZ '{quarter_start}'"),
        seg("from_google", "Came from Google", trait("utm\\.source", "eq", "google"),
            "SELECT id FROM profiles WHERE (traits->>'$.\"utm.source\"') = 'google'"),
        seg("ltv_over_1000", "Lifetime value over 1000", trait("lifetime_value", "gt", 1000),
            "SELECT id FROM profiles WHERE TRY_CAST(traits->>'$.lifetime_value' AS DOUBLE) > 1000"),
        seg("northeast_zip", "Postal codes 01000-19999", trait("address.postal_code", "between", ["01000", "19999"]),
            "SELECT id FROM profiles WHERE (traits->>'$.address.postal_code') BETWEEN '01000' AND '19999'"),
        seg("executives", "Executives",
            {"all": [trait("company", "exists"),
                     {"any": [trait("title", "starts_with", "VP"), trait("title", "contains", "Chief")]}]},
            """SELECT id FROM profiles
               WHERE (traits->>'$.company') IS NOT NULL
                 AND (starts_with(traits->>'$.title', 'VP') OR contains(traits->>'$.title', 'Chief'))"""),
        seg("us_paid_newsletter", "US, paid, newsletter, not under 25",
            {"all": [trait("address.country", "eq", "US"), trait("plan", "in", ["pro", "team"]),
                     trait("newsletter", "eq", True), {"not": trait("age", "lt", 25)}]},
            f"""SELECT id FROM profiles
                WHERE (traits->>'$.address.country') = 'US' AND (traits->>'$.plan') IN ('pro', 'team')
                  AND (traits->>'$.newsletter') = 'true' AND NOT coalesce({age} < 25, false)"""),
        # -- computed traits --------------------------------------------------------------------------------
        seg("repeat_buyers", "Three or more orders", trait("order_count", "gte", 3),
            "SELECT id FROM profiles WHERE TRY_CAST(computed->>'$.order_count' AS DOUBLE) >= 3"),
        seg("lapsed_customers", "Bought, but not in 45 days",
            {"all": [trait("order_count", "gte", 1), trait("last_order_at", "before", ago(days=45))]},
            f"""SELECT id FROM profiles
                WHERE TRY_CAST(computed->>'$.order_count' AS DOUBLE) >= 1
                  AND (computed->>'$.last_order_at') < '{ago(days=45)}'"""),
        seg("recently_active", "Seen in the last 3 days", trait("last_seen", "within_last", "3d"),
            f"SELECT id FROM profiles WHERE (computed->>'$.last_seen') BETWEEN '{ago(days=3)}' AND '{N}'"),
        seg("rfm_champions", "RFM champions",
            {"all": [trait("rfm.frequency", "gte", 3), trait("rfm.recency_days", "lte", 14),
                     trait("rfm.monetary", "gte", 300)]},
            """SELECT id FROM profiles
               WHERE TRY_CAST(computed->>'$.rfm.frequency' AS DOUBLE) >= 3
                 AND TRY_CAST(computed->>'$.rfm.recency_days' AS DOUBLE) <= 14
                 AND TRY_CAST(computed->>'$.rfm.monetary' AS DOUBLE) >= 300"""),
        seg("high_aov", "Average order value 150+", trait("average_order_value", "gte", 150),
            "SELECT id FROM profiles WHERE TRY_CAST(computed->>'$.average_order_value' AS DOUBLE) >= 150"),
        seg("product_browsers", "25+ product views", trait("event_counts.Product Viewed", "gte", 25),
            """SELECT id FROM profiles
               WHERE TRY_CAST(computed->>'$.event_counts."Product Viewed"' AS DOUBLE) >= 25"""),
        seg("not_zero_orders", "Order count is not 0 (or unknown)", trait("order_count", "neq", 0),
            "SELECT id FROM profiles WHERE NOT coalesce(TRY_CAST(computed->>'$.order_count' AS DOUBLE) = 0, false)"),
        # -- events: the classic examples -------------------------------------------------------------------
        seg("engaged", "Engaged visitors",
            {"event": "Product Viewed", "within": "48h", "count": {"op": "gte", "value": 3},
             "sum": {"property": "duration", "op": "gt", "value": 120}},
            f"""SELECT profile_id FROM events
                WHERE type = 'track' AND event = 'Product Viewed' AND {win(hours=48)}
                GROUP BY profile_id HAVING count(*) >= 3 AND sum({duration}) > 120"""),
        seg("high_value", "High-value customers",
            {"all": [
                {"event": "Order Completed", "within": "30d",
                 "where": [{"property": "currency", "op": "eq", "value": "USD"}],
                 "count": {"op": "gte", "value": 2}, "sum": {"property": "revenue", "op": "gte", "value": 500}},
                trait("address.country", "in", ["US", "CA"]),
                {"not": {"event": "Unsubscribed", "within": "90d"}},
                {"any": [trait("plan", "eq", "pro"), {"in_segment": "engaged"}]}]},
            f"""SELECT id FROM profiles
                WHERE id IN (SELECT profile_id FROM events
                             WHERE {orders} AND {win(days=30)} AND (properties->>'$.currency') = 'USD'
                             GROUP BY profile_id HAVING count(*) >= 2 AND sum({revenue}) >= 500)
                  AND (traits->>'$.address.country') IN ('US', 'CA')
                  AND id NOT IN (SELECT profile_id FROM events
                                 WHERE type = 'track' AND event = 'Unsubscribed' AND {win(days=90)})
                  AND (traits->>'$.plan' = 'pro' OR id IN (SELECT profile_id FROM seg_engaged))"""),
        seg("potential_churners", "Fewer sessions this week than the week before",
            {"all": [{"event": "Session Started", "between": [two_weeks_ago, week_ago],
                      "count": {"op": "gte", "value": 2}},
                     {"event": "Session Started", "within": "7d", "count": {"op": "lt", "value": 2}}]},
            f"""SELECT profile_id FROM events
                WHERE {sessions} AND timestamp >= '{two_weeks_ago}' AND timestamp < '{week_ago}'
                GROUP BY profile_id HAVING count(*) >= 2
                EXCEPT
                SELECT profile_id FROM events WHERE {sessions} AND {win(days=7)}
                GROUP BY profile_id HAVING count(*) >= 2"""),
        # -- events: windows, where, thresholds -------------------------------------------------------------
        seg("cart_abandoners", "Added to cart this week, no order",
            {"all": [{"event": "Product Added", "within": "7d"},
                     {"not": {"event": "Order Completed", "within": "7d"}}]},
            f"""SELECT profile_id FROM events WHERE type = 'track' AND event = 'Product Added' AND {win(days=7)}
                EXCEPT
                SELECT profile_id FROM events WHERE {orders} AND {win(days=7)}"""),
        seg("frequent_searchers", "5+ searches in 30 days",
            {"event": "Search", "within": "30d", "count": {"op": "gte", "value": 5}},
            f"""SELECT profile_id FROM events WHERE type = 'track' AND event = 'Search' AND {win(days=30)}
                GROUP BY profile_id HAVING count(*) >= 5"""),
        seg("video_bingers", "Average video play of 10+ minutes",
            {"event": "Video Played", "within": "30d", "avg": {"property": "duration", "op": "gte", "value": 600}},
            f"""SELECT profile_id FROM events WHERE type = 'track' AND event = 'Video Played' AND {win(days=30)}
                GROUP BY profile_id HAVING avg({duration}) >= 600"""),
        seg("big_ticket_buyers", "An order of 450+ in 90 days",
            {"event": "Order Completed", "within": "90d", "max": {"property": "revenue", "op": "gte", "value": 450}},
            f"""SELECT profile_id FROM events WHERE {orders} AND {win(days=90)}
                GROUP BY profile_id HAVING max({revenue}) >= 450"""),
        seg("bargain_hunters", "2+ orders, none over 60",
            {"event": "Order Completed", "within": "90d", "count": {"op": "gte", "value": 2},
             "max": {"property": "revenue", "op": "lt", "value": 60}},
            f"""SELECT profile_id FROM events WHERE {orders} AND {win(days=90)}
                GROUP BY profile_id HAVING count(*) >= 2 AND max({revenue}) < 60"""),
        seg("consistent_spenders", "2+ orders, each 100+",
            {"event": "Order Completed", "within": "90d", "count": {"op": "gte", "value": 2},
             "min": {"property": "revenue", "op": "gte", "value": 100}},
            f"""SELECT profile_id FROM events WHERE {orders} AND {win(days=90)}
                GROUP BY profile_id HAVING count(*) >= 2 AND min({revenue}) >= 100"""),
        seg("docs_deep_readers", "3+ long docs page views",
            {"event": "Docs", "within": "30d", "where": [{"property": "duration", "op": "gt", "value": 60}],
             "count": {"op": "gte", "value": 3}},
            f"""SELECT profile_id FROM events
                WHERE type = 'page' AND event = 'Docs' AND {win(days=30)} AND {duration} > 60
                GROUP BY profile_id HAVING count(*) >= 3"""),
        seg("email_engaged", "Opens or clicks emails",
            {"any": [{"event": "Email Opened", "within": "14d", "count": {"op": "gte", "value": 3}},
                     {"event": "Email Clicked", "within": "14d"}]},
            f"""SELECT profile_id FROM events WHERE type = 'track' AND event = 'Email Opened' AND {win(days=14)}
                GROUP BY profile_id HAVING count(*) >= 3
                UNION
                SELECT profile_id FROM events WHERE type = 'track' AND event = 'Email Clicked' AND {win(days=14)}"""),
        seg("eur_buyers", "Ever paid in EUR",
            {"event": "Order Completed", "where": [{"property": "currency", "op": "eq", "value": "EUR"}]},
            f"SELECT DISTINCT profile_id FROM events WHERE {orders} AND (properties->>'$.currency') = 'EUR'"),
        seg("coupon_users", "Used a coupon in 60 days",
            {"event": "Order Completed", "within": "60d", "where": [{"property": "coupon", "op": "exists"}]},
            f"""SELECT DISTINCT profile_id FROM events
                WHERE {orders} AND {win(days=60)} AND (properties->>'$.coupon') IS NOT NULL"""),
        seg("sku_42_buyers", "Bought SKU-00042",
            {"event": "Order Completed", "where": [{"property": "skus", "op": "contains", "value": "SKU-00042"}]},
            f"""SELECT DISTINCT profile_id FROM events
                WHERE {orders} AND list_contains(json_extract_string(properties, '$.skus[*]'), 'SKU-00042')"""),
        seg("last_month_mid_spenders", "Spent 100-1000 the month before last",
            {"event": "Order Completed", "between": [two_months_ago, month_ago],
             "sum": {"property": "revenue", "op": "between", "value": [100, 1000]}},
            f"""SELECT profile_id FROM events
                WHERE {orders} AND timestamp >= '{two_months_ago}' AND timestamp < '{month_ago}'
                GROUP BY profile_id HAVING coalesce(sum({revenue}), 0) BETWEEN 100 AND 1000"""),
        seg("inactive_30d", "No session in 30 days",
            {"event": "Session Started", "within": "30d", "count": {"op": "lt", "value": 1}},
            f"""SELECT id FROM profiles
                WHERE id NOT IN (SELECT profile_id FROM events WHERE {sessions} AND {win(days=30)})"""),
        seg("low_session_time", "Under 5 minutes of sessions this week",
            {"event": "Session Started", "within": "7d", "sum": {"property": "duration", "op": "lt", "value": 300}},
            f"""SELECT id FROM profiles
                WHERE id NOT IN (SELECT profile_id FROM events WHERE {sessions} AND {win(days=7)}
                                 GROUP BY profile_id HAVING coalesce(sum({duration}), 0) >= 300)"""),
        seg("feature_power_users", "5+ uses of export, API or SSO",
            {"event": "Feature Used", "within": "30d",
             "where": [{"property": "feature", "op": "in", "value": ["export", "api", "sso"]}],
             "count": {"op": "gte", "value": 5}},
            f"""SELECT profile_id FROM events
                WHERE type = 'track' AND event = 'Feature Used' AND {win(days=30)}
                  AND (properties->>'$.feature') IN ('export', 'api', 'sso')
                GROUP BY profile_id HAVING count(*) >= 5"""),
        seg("mobile_regulars", "3+ mobile sessions in 30 days",
            {"event": "Session Started", "within": "30d",
             "where": [{"property": "device", "op": "eq", "value": "mobile"}], "count": {"op": "gte", "value": 3}},
            f"""SELECT profile_id FROM events
                WHERE {sessions} AND {win(days=30)} AND (properties->>'$.device') = 'mobile'
                GROUP BY profile_id HAVING count(*) >= 3"""),
        # -- in_segment chains and nesting ------------------------------------------------------------------
        seg("engaged_pros", "Engaged, on pro", {"all": [{"in_segment": "engaged"}, trait("plan", "eq", "pro")]},
            """SELECT id FROM profiles
               WHERE id IN (SELECT profile_id FROM seg_engaged) AND (traits->>'$.plan') = 'pro'"""),
        seg("vip_customers", "VIP customers",
            {"any": [{"in_segment": "high_value"}, {"in_segment": "rfm_champions"}, trait("tags", "contains", "vip")]},
            """SELECT profile_id FROM seg_high_value
               UNION SELECT profile_id FROM seg_rfm_champions
               UNION SELECT id FROM profiles WHERE list_contains(json_extract_string(traits, '$.tags[*]'), 'vip')"""),
        seg("winback", "Lapsed and not reading email",
            {"all": [{"in_segment": "lapsed_customers"}, {"not": {"in_segment": "email_engaged"}}]},
            "SELECT profile_id FROM seg_lapsed_customers EXCEPT SELECT profile_id FROM seg_email_engaged"),
        seg("winback_europe", "Win-back, Europe",
            {"all": [{"in_segment": "winback"}, trait("address.country", "in", ["DE", "FR", "GB"])]},
            """SELECT w.profile_id FROM seg_winback w JOIN profiles p ON p.id = w.profile_id
               WHERE (p.traits->>'$.address.country') IN ('DE', 'FR', 'GB')"""),
        seg("dormant_free", "Free, no session or email open in 30 days",
            {"all": [trait("plan", "eq", "free"),
                     {"not": {"any": [{"event": "Session Started", "within": "30d"},
                                      {"event": "Email Opened", "within": "30d"}]}}]},
            f"""SELECT id FROM profiles
                WHERE (traits->>'$.plan') = 'free'
                  AND id NOT IN (SELECT profile_id FROM events
                                 WHERE type = 'track' AND event IN ('Session Started', 'Email Opened')
                                   AND {win(days=30)})"""),
    ]  # fmt: skip


def referenced(segs: list[Segment]) -> set[str]:
    """Keys used through in_segment (kept as seg_<key> tables by the hand-written run)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "in_segment" in node:
                found.add(node["in_segment"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for s in segs:
        walk(s.definition["rule"])
    return found


# -- cdp ----------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


class TreeRSS:
    """Peak resident memory of this process plus its children (cdp runs DuckDB in a child), sampled."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _rss_kb(me) + sum(_rss_kb(c) for c in _children(me)))
            self._stop.wait(self.every)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class LoadSampler:
    """The 1-minute load average, sampled every few seconds while the benchmark runs (others share the machine)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        values = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}


def run_cdp(
    db: Path, now: datetime, segs: list[Segment], log: Callable[[str], None], between: Callable[[], None]
) -> dict[str, Any]:
    """Create the segments and run compute_many three times (the first writes every membership, the others
    change nothing), calling ``between`` after the second and the third; per-segment query and wall times."""
    import cdp.segments.service as segments_api
    from cdp.segments.engine import Engine

    queries: list[tuple[float, float]] = []
    # Time each segment's query: wrap whichever of the engine's evaluation methods compute_many calls.
    originals = {name: Engine.__dict__[name] for name in ("members_sql", "members_sorted") if name in Engine.__dict__}

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                queries.append((started, time.perf_counter()))

        return wrapper

    real_utcnow = getattr(segments_api, "utcnow")  # noqa: B009
    cdp = CDP(Settings(db=db, scheduler_enabled=False))
    try:
        t = time.perf_counter()
        existing = {row["key"] for row in cdp.segments.list(limit=1000).data}
        for s in segs:
            if s.key not in existing:  # --reuse: a previous run created them
                cdp.segments.create(s.definition)
        created = time.perf_counter() - t
        setattr(segments_api, "utcnow", lambda: now)  # noqa: B010  # compute_many's "now": the hand SQL's
        for name, original in originals.items():
            setattr(Engine, name, staticmethod(timed(original.__func__)))
        runs = []
        marks: list[float] = []

        def progress(label: str, t0: float) -> None:
            marks.append(time.perf_counter())
            if len(marks) % 10 == 0:
                log(f"    cdp {label} run: {len(marks)}/{len(segs)} segments, {marks[-1] - t0:.1f} s")

        for label in ("first", "second", "third"):
            queries.clear()
            marks.clear()
            with TreeRSS() as rss:
                t0 = time.perf_counter()
                results = cdp.segments.compute_many(
                    trigger="bench", progress=lambda _r, t0=t0, label=label: progress(label, t0)
                )
                wall = time.perf_counter() - t0
            failed = [r for r in results if r.status != "succeeded"]
            if failed:
                raise SystemExit(
                    f"cdp: {len(failed)} segment run(s) failed: {failed[0].segment_key}: {failed[0].error}"
                )
            per: dict[str, dict[str, Any]] = {}
            first_query = queries[0][0] if queries else t0
            previous = first_query
            for i, r in enumerate(results):
                q = queries[i] if len(queries) == len(results) else None
                per[r.segment_key] = {
                    "size": r.size,
                    "entered": r.entered,
                    "exited": r.exited,
                    "query_s": round(q[1] - q[0], 4) if q else None,
                    "wall_s": round(marks[i] - previous, 4),
                }
                previous = marks[i]
            runs.append({
                "label": label,
                "wall_s": round(wall, 3),
                "setup_s": round(first_query - t0, 3),  # trait refresh check, attach, materialization
                "query_s": round(sum(q[1] - q[0] for q in queries), 3),
                "after_s": round(t0 + wall - (marks[-1] if marks else t0), 3),
                "segments": per,
                "peak_rss_mb": round(rss.peak_kb / 1024, 1),  # bench process + cdp's DuckDB worker
            })  # fmt: skip
            log(
                f"  cdp {label} run: {wall:.1f} s (setup {runs[-1]['setup_s']:.1f} s, queries "
                f"{runs[-1]['query_s']:.1f} s), {sum(r.entered for r in results):,} entered, "
                f"{sum(r.exited for r in results):,} exited"
            )
            if label != "first":
                between()
        return {"create_s": round(created, 3), "runs": runs}
    finally:
        setattr(segments_api, "utcnow", real_utcnow)  # noqa: B010
        for name, original in originals.items():
            setattr(Engine, name, original)
        cdp.close()


# -- hand-written SQL (its own process: its own peak RSS) -----------------------------------------------------


def run_hand(db: str, now_iso: str) -> dict[str, Any]:
    """The 50 hand-written queries over the same attach + materialization; compared with what cdp stored."""
    now = datetime.fromisoformat(now_iso)
    segs = segments(now)
    kept = referenced(segs)
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    _load_extension(con)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"ATTACH {_q(db)} AS db (TYPE sqlite, READ_ONLY)")
    con.execute(
        "CREATE TEMP TABLE events AS SELECT profile_id, type, event, timestamp, properties FROM db.events"
        " WHERE profile_id IS NOT NULL"
    )
    con.execute("CREATE TEMP TABLE profiles AS SELECT id, traits, computed FROM db.profiles WHERE merged_into IS NULL")
    setup = time.perf_counter() - t0
    per: dict[str, float] = {}
    found: dict[str, set[str]] = {}
    for s in segs:
        t = time.perf_counter()
        if s.key in kept:
            con.execute(f"CREATE TEMP TABLE seg_{s.key} AS SELECT * FROM ({s.hand}) AS t(profile_id)")
            rows = con.execute(f"SELECT profile_id FROM seg_{s.key}").fetchall()
        else:
            rows = con.execute(s.hand).fetchall()
        found[s.key] = {r[0] for r in rows}
        per[s.key] = round(time.perf_counter() - t, 4)
    total = time.perf_counter() - t0
    con.close()
    rss = peak_rss_mb()

    stored_conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    mismatches = {}
    for s in segs:
        stored = {
            r[0] for r in stored_conn.execute("SELECT profile_id FROM memberships WHERE segment_key = ?", (s.key,))
        }
        if stored != found[s.key]:
            mismatches[s.key] = {
                "cdp": len(stored),
                "hand": len(found[s.key]),
                "only_cdp": sorted(stored - found[s.key])[:5],
                "only_hand": sorted(found[s.key] - stored)[:5],
            }
    stored_conn.close()
    return {
        "total_s": round(total, 3),
        "setup_s": round(setup, 3),
        "query_s": round(sum(per.values()), 3),
        "segments": per,
        "sizes": {k: len(v) for k, v in found.items()},
        "mismatches": mismatches,
        "peak_rss_mb": round(rss, 1),
    }


def explain_mismatch(db: Path, now: datetime, segment: Segment, ids: list[str]) -> dict[str, bool]:
    """The reference evaluator's verdict (cdp's plain-Python reading of the rule) for disputed profiles."""
    from cdp.segments import rules

    cdp = CDP(Settings(db=db, scheduler_enabled=False))
    try:
        rule = rules.validate(segment.definition).rule
        assert rule is not None
        members = cdp.segments.engine.members_python(rule, ids, now)
        return {pid: pid in members for pid in ids}
    finally:
        cdp.close()


# -- serving latency ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def member_ids(db: Path, n: int, seed: int = 7) -> list[str]:
    """Random profiles that are in at least one segment (a random point in the id space, then the next member)."""
    rnd = random.Random(seed)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    found: set[str] = set()
    for _ in range(n * 2):
        row = conn.execute(
            "SELECT profile_id FROM memberships WHERE profile_id >= ? ORDER BY profile_id LIMIT 1",
            ("prof_" + rnd.randbytes(10).hex(),),
        ).fetchone()
        if row:
            found.add(row[0])
        if len(found) >= n:
            break
    conn.close()
    return sorted(found)


def drive(
    port: int, token: str, ids: list[str], rate: float, seconds: float, warmup: float, connections: int
) -> dict[str, Any]:
    """Paced open-loop load from one asyncio loop (no GIL hand-offs between client threads).

    Request k is due at start + k / rate; when it is due, the pacer hands it to whichever keep-alive
    connection is free (if none is, it waits in line, and that wait counts). ``latency`` runs from the due
    time to the last byte of the answer; ``service`` from the moment the request was written.
    """
    import asyncio

    total = int(rate * (warmup + seconds))
    n_warm = int(rate * warmup)
    rnd = random.Random(11)
    requests = [
        f"GET /v1/profiles/{rnd.choice(ids)}/segments HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
        for _ in range(total)
    ]
    due = [0.0] * total
    sent = [0.0] * total
    done = [0.0] * total
    ok = [False] * total
    errors: list[str] = []

    async def run() -> None:
        line: asyncio.Queue[int | None] = asyncio.Queue()

        async def connection() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            while (k := await line.get()) is not None:
                sent[k] = time.perf_counter()
                try:
                    writer.write(requests[k])
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for header in head.split(b"\r\n"):
                        if header[:15].lower() == b"content-length:":
                            length = int(header[15:])
                    body = await reader.readexactly(length)
                    ok[k] = head.startswith(b"HTTP/1.1 200") and b'"key"' in body
                    if not ok[k] and len(errors) < 5:
                        errors.append(f"{head[:40]!r} {body[:200]!r}")
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    if len(errors) < 5:
                        errors.append(repr(exc))
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                done[k] = time.perf_counter()
            writer.close()

        workers = [asyncio.create_task(connection()) for _ in range(connections)]
        start = time.perf_counter() + 0.5
        for k in range(total):
            due[k] = start + k / rate
            delay = due[k] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            line.put_nowait(k)
        for _ in workers:
            line.put_nowait(None)
        await asyncio.gather(*workers)

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    measured = range(n_warm, total)
    latency = sorted((done[k] - due[k]) * 1000 for k in measured)
    service = sorted((done[k] - sent[k]) * 1000 for k in measured)
    late = sorted((sent[k] - due[k]) * 1000 for k in measured)
    span = max(done[k] for k in measured) - due[n_warm]

    def pct(values: list[float], p: float) -> float:
        return round(values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)], 3)

    return {
        "requests": len(latency),
        "failed": sum(1 for k in range(total) if not ok[k]),
        "errors": errors,
        "target_rps": rate,
        "achieved_rps": round(len(latency) / span, 1),
        "connections": connections,
        "p50_ms": pct(latency, 50),
        "p95_ms": pct(latency, 95),
        "p99_ms": pct(latency, 99),
        "max_ms": round(latency[-1], 3),
        "service_p50_ms": pct(service, 50),
        "service_p95_ms": pct(service, 95),
        "service_p99_ms": pct(service, 99),
        "sent_late_p99_ms": pct(late, 99),
    }


def _drive_child(queue: Any, *args: Any) -> None:
    queue.put(drive(*args))


def serve_latency(
    db: Path, rate: float, seconds: float, connections: int, log: Callable[[str], None]
) -> dict[str, Any]:
    cdp_bin = str(Path(sys.executable).parent / "cdp")
    made = subprocess.run(
        [cdp_bin, "keys", "create", "--kind", "read", "--name", "bench", "--db", str(db)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = made.stdout.strip().splitlines()[-1]
    ids = member_ids(db, 5000)
    if not ids:
        raise SystemExit("serving: no profile is in any segment")
    port = free_port()
    log_path = db.with_suffix(".server.log")
    with open(log_path, "wb") as server_log:
        server = subprocess.Popen(
            [cdp_bin, "serve", "--db", str(db), "--port", str(port), "--no-scheduler", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=server_log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"serving: the server exited ({server.returncode}); see {log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("serving: the server did not answer /healthz within 120 s")
            time.sleep(0.2)
        log(f"  server up on 127.0.0.1:{port} (pid {server.pid}); {len(ids):,} member ids")
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_drive_child, args=(queue, port, token, ids, rate, seconds, 2.0, connections))
        child.start()
        result: dict[str, Any] = _result_of(child, queue, timeout=seconds + 120)
        return result
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- main ---------------------------------------------------------------------------------------------------


def _result_of(child: Any, queue: Any, timeout: float = 24 * 3600) -> Any:
    """The one result a child process puts on ``queue``; SystemExit if it dies first."""
    import queue as queues

    deadline = time.monotonic() + timeout
    while True:
        try:
            result = queue.get(timeout=1)
            child.join()
            return result
        except queues.Empty:
            if not child.is_alive():
                raise SystemExit(f"{child.name} failed (exit code {child.exitcode})") from None
            if time.monotonic() > deadline:
                child.terminate()
                raise SystemExit(f"{child.name} did not finish in {timeout:g} s") from None


def _build_child(queue: Any, path: str, n_live: int, n_events: int, now_iso: str) -> None:
    queue.put(build_store(Path(path), n_live, n_events, datetime.fromisoformat(now_iso), print))


def cached_store(cache: Path, n_live: int, n_events: int, rebuild: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """The built store for this scale (building it in a child process when missing or asked to)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"store-v{GEN_VERSION}-p{n_live}-e{n_events}.db"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and not rebuild:
        meta = json.loads(meta_path.read_text())
        log(f"store: cached {path} (built {meta['built_at']} in {meta['build_seconds']} s)")
        return {**meta, "path": str(path), "cached": True}
    for old in (path, meta_path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        old.unlink(missing_ok=True)
    building = path.with_suffix(".building.db")
    for old in (building, Path(f"{building}-wal"), Path(f"{building}-shm"), Path(f"{building}-journal")):
        old.unlink(missing_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    log(f"store: building {n_live:,} profiles and {n_events:,} events into {building}")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_build_child, args=(queue, str(building), n_live, n_events, now.isoformat()))
    child.start()
    meta = _result_of(child, queue)
    building.rename(path)
    meta_path.write_text(json.dumps(meta))
    log(f"store: built in {meta['build_seconds']} s")
    return {**meta, "path": str(path), "cached": False}


def _hand_child(queue: Any, db: str, now_iso: str) -> None:
    queue.put(run_hand(db, now_iso))


def serve_only(work: Path, args: argparse.Namespace, log: Callable[[str], None]) -> int:
    """The serving test alone, on the working copy (with memberships) that a previous run left."""
    if not work.exists():
        raise SystemExit(f"--serve-only: no working copy {work}; run the benchmark once first")
    load = LoadSampler(every=1.0).start()
    serving = serve_latency(work, args.rate, args.seconds, args.connections, log)
    load_during = load.stop()
    log(
        f"serving: {serving['requests']:,} requests at {serving['achieved_rps']:.0f}/s: p50 {serving['p50_ms']:.2f} ms,"
        f" p99 {serving['p99_ms']:.2f} ms (from the moment it was written: p50 {serving['service_p50_ms']:.2f} ms,"
        f" p99 {serving['service_p99_ms']:.2f} ms); {serving['failed']} failed; 1-minute load mean"
        f" {load_during['mean']:.2f}, max {load_during['max']:.2f}"
    )
    summary = {"bench": "segments-serving", "db": str(work), "serving": serving, "load_during": load_during}
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 1 if serving["failed"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 profiles and 1,000,000 events")
    parser.add_argument("--rebuild", action="store_true", help="build the store even when a cached one exists")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/cdp-bench-segments"))
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s for the serving test")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the serving test")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the load generator")
    parser.add_argument("--no-serve", action="store_true", help="skip the serving test")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the cached store and stop")
    parser.add_argument(
        "--reuse", action="store_true",
        help="reuse the working copy a previous run left (computed segments: three no-change runs; fast)",
    )  # fmt: skip
    parser.add_argument(
        "--serve-only", action="store_true",
        help="only the serving test, on the working copy a previous run left (its memberships)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.profiles, args.events = 100_000, 1_000_000

    def log(message: str) -> None:
        print(message, flush=True)

    load_start = os.getloadavg()
    log(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)} ({os.cpu_count()} cores)")
    work = args.cache_dir / f"work-p{args.profiles}-e{args.events}.db"
    if args.serve_only:
        return serve_only(work, args, log)
    load = LoadSampler().start()
    store = cached_store(args.cache_dir, args.profiles, args.events, args.rebuild, log)
    if args.build_only:
        return 0
    reused = bool(args.reuse and work.exists())
    if reused:
        log(f"store: reusing the working copy {work} (its segments are computed: every cdp run changes nothing)")
    else:
        for old in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            old.unlink(missing_ok=True)
        t = time.perf_counter()
        shutil.copyfile(store["path"], work)
        log(
            f"store: working copy {work} ({work.stat().st_size / 2**30:.2f} GiB,"
            f" copied in {time.perf_counter() - t:.1f} s)"
        )

    built_at = datetime.fromisoformat(store["built_at"].replace("Z", "+00:00"))
    now = built_at + timedelta(hours=1)
    segs = segments(now)
    log(f"now (frozen for both sides): {ts(now)}")

    hands: list[dict[str, Any]] = []

    def hand_run() -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_hand_child, args=(queue, str(work), now.isoformat()), name="hand-written")
        child.start()
        hand = _result_of(child, queue)
        hands.append(hand)
        log(
            f"  hand-written SQL (separate process): {hand['total_s']:.1f} s (setup {hand['setup_s']:.1f} s,"
            f" queries {hand['query_s']:.1f} s); {len(hand['mismatches'])} member sets differ from cdp's"
        )

    log("cdp: create the 50 segments, compute_many 3 times; the hand-written SQL after the 2nd and the 3rd")
    cdp_result = run_cdp(work, now, segs, log, hand_run)
    first, second, third = cdp_result["runs"]
    # Runs alternate (cdp, hand, cdp, hand) so neither side always finds the page cache warmer; best of two each.
    steady = min(second, third, key=lambda r: float(r["wall_s"]))
    hand = min(hands, key=lambda h: float(h["total_s"]))

    failed = False
    mismatches = {key: diff for h in hands for key, diff in h["mismatches"].items()}
    if mismatches:
        failed = True
        by_key = {s.key: s for s in segs}
        for key, diff in mismatches.items():
            disputed = diff["only_cdp"] + diff["only_hand"]
            verdict = explain_mismatch(work, now, by_key[key], disputed)
            log(f"MISMATCH {key}: cdp {diff['cdp']:,} members, hand-written {diff['hand']:,}")
            for pid in disputed:
                side = "cdp only " if pid in diff["only_cdp"] else "hand only"
                log(f"    {side} {pid}: reference evaluator says {'member' if verdict[pid] else 'not a member'}")

    serving: dict[str, Any] | None = None
    if not args.no_serve:
        log("serving: GET /v1/profiles/{id}/segments")
        serving = serve_latency(work, args.rate, args.seconds, args.connections, log)
        if serving["failed"]:
            failed = True
            log(f"serving: {serving['failed']} request(s) failed: {serving['errors']}")
    load_end = os.getloadavg()
    load_during = load.stop()

    # -- report -----------------------------------------------------------------------------------------------
    hand_total = hand["total_s"]
    log("")
    log("per segment, seconds (cdp: from the previous segment's end to this one's, so it includes writing its")
    log("memberships, history and outbox; query: the DuckDB query alone; steady: the faster no-change run)")
    seg_ratios = {
        s.key: steady["segments"][s.key]["wall_s"] / hand["segments"][s.key]
        for s in segs
        if hand["segments"][s.key] > 0
    }
    worst = max(seg_ratios, key=lambda k: seg_ratios[k])
    head = f"{'segment':<26}{'size':>10}{'entered':>10}  {'cdp 1st':>8}{'steady':>8}{'query':>8}{'hand':>8}"
    log(head + f"{'ratio':>8}")
    for s in segs:
        a, b = first["segments"][s.key], steady["segments"][s.key]
        h = hand["segments"][s.key]
        ratio = b["wall_s"] / h if h else float("inf")
        log(
            f"{s.key:<26}{b['size']:>10,}{a['entered']:>10,}  {a['wall_s']:>8.2f}{b['wall_s']:>8.2f}"
            f"{(b['query_s'] or 0):>8.2f}{h:>8.2f}{ratio:>8.2f}"
        )
    setup = f"{'before the 1st query (attach, materialize)':<46}{first['setup_s']:>8.2f}{steady['setup_s']:>8.2f}"
    log(setup + f"{'':>8}{hand['setup_s']:>8.2f}")
    log(f"{'total':<46}{first['wall_s']:>8.2f}{steady['wall_s']:>8.2f}{steady['query_s']:>8.2f}{hand_total:>8.2f}")
    ratio_first = first["wall_s"] / hand_total
    ratio_steady = steady["wall_s"] / hand_total
    ratio_queries = steady["query_s"] / hand["query_s"]
    # Each no-change cdp run against the hand-written run right after it: on a shared machine, neighbours in
    # time see the most similar load.
    ratio_pairs = [round(c["wall_s"] / h["total_s"], 3) for c, h in zip((second, third), hands, strict=True)]
    memberships = sum(v["size"] or 0 for v in steady["segments"].values())
    entered = sum(v["entered"] for v in first["segments"].values())
    log("")
    log(f"store: {store['profiles_live']:,} live profiles (+{store['profiles_merged']:,} merged), "
        f"{store['events']:,} events; built in {store['build_seconds']} s"
        f"{' (cached)' if store['cached'] else ''}")  # fmt: skip
    log(f"memberships: {memberships:,}; creating the 50 segments took {cdp_result['create_s']:.2f} s")
    if entered:
        log(f"cdp 1st run (writes {entered:,} memberships, enter rows and outbox rows): {first['wall_s']:.1f} s"
            f" = {ratio_first:.2f}x hand-written")  # fmt: skip
    else:
        log(f"cdp 1st run: {first['wall_s']:.1f} s (nothing to change: the segments were computed before)")
    log(f"cdp runs with nothing to change: {second['wall_s']:.1f} s, {third['wall_s']:.1f} s; best "
        f"{steady['wall_s']:.1f} s = {ratio_steady:.2f}x hand-written (targets <= {TARGET_RATIO}x and "
        f"<= {TARGET_SECONDS:g} s); each against the hand-written run after it: "
        f"{', '.join(f'{r:.2f}x' for r in ratio_pairs)}")  # fmt: skip
    hand_runs = ", ".join(f"{h['total_s']:.1f} s" for h in hands)
    log(f"hand-written, attach + materialize + 50 queries: {hand_runs};"
        f" best {hand_total:.1f} s (queries alone {hand['query_s']:.1f} s; cdp's queries alone"
        f" {steady['query_s']:.1f} s = {ratio_queries:.2f}x)")  # fmt: skip
    log(f"largest per-segment ratio (steady run): {seg_ratios[worst]:.2f}x ({worst}: "
        f"{steady['segments'][worst]['wall_s']:.2f} s against {hand['segments'][worst]:.2f} s)")  # fmt: skip
    log(f"member sets: {'all 50 equal, in both hand-written runs' if not mismatches else f'{len(mismatches)} DIFFER'}")
    log(f"peak RSS: cdp (bench process + its DuckDB worker) {max(r['peak_rss_mb'] for r in cdp_result['runs']):,.0f}"
        f" MB, hand-written process {max(h['peak_rss_mb'] for h in hands):,.0f} MB")  # fmt: skip
    if serving:
        log(
            f"serving: {serving['requests']:,} requests at {serving['achieved_rps']:.0f}/s (target {args.rate:g}/s): "
            f"p50 {serving['p50_ms']:.2f} ms, p95 {serving['p95_ms']:.2f} ms, p99 {serving['p99_ms']:.2f} ms, "
            f"max {serving['max_ms']:.1f} ms (target p99 <= {TARGET_P99_MS:g} ms); {serving['failed']} failed"
        )
        log(f"  (from the moment each request was due; from the moment it was written: p50 "
            f"{serving['service_p50_ms']:.2f} ms, p99 {serving['service_p99_ms']:.2f} ms)")  # fmt: skip
    log(f"load average: start {' '.join(f'{x:.2f}' for x in load_start)}, end {' '.join(f'{x:.2f}' for x in load_end)};"
        f" 1-minute load during the run: mean {load_during['mean']:.2f}, max {load_during['max']:.2f}"
        f" ({os.cpu_count()} cores)")  # fmt: skip
    summary = {
        "bench": "segments",
        "profiles": store["profiles_live"],
        "profiles_merged": store["profiles_merged"],
        "events": store["events"],
        "build_s": store["build_seconds"],
        "store_cached": store["cached"],
        "reused_working_copy": reused,
        "store_gib": round(work.stat().st_size / 2**30, 2),
        "now": ts(now),
        "segments": len(segs),
        "memberships": memberships,
        "create_s": cdp_result["create_s"],
        "cdp_first_s": first["wall_s"],
        "cdp_first_setup_s": first["setup_s"],
        "cdp_first_query_s": first["query_s"],
        "cdp_second_s": second["wall_s"],
        "cdp_third_s": third["wall_s"],
        "cdp_steady_s": steady["wall_s"],
        "cdp_steady_setup_s": steady["setup_s"],
        "cdp_steady_query_s": steady["query_s"],
        "hand_runs_s": [h["total_s"] for h in hands],
        "hand_s": hand_total,
        "hand_setup_s": hand["setup_s"],
        "hand_query_s": hand["query_s"],
        "ratio_first": round(ratio_first, 3),
        "ratio_steady": round(ratio_steady, 3),
        "ratio_pairs": ratio_pairs,
        "ratio_queries_only": round(ratio_queries, 3),
        "max_segment_ratio": round(seg_ratios[worst], 3),
        "max_segment_ratio_key": worst,
        "target_ratio": TARGET_RATIO,
        "target_s": TARGET_SECONDS,
        "mismatches": sorted(mismatches),
        "peak_rss_cdp_mb": max(r["peak_rss_mb"] for r in cdp_result["runs"]),
        "peak_rss_hand_mb": max(h["peak_rss_mb"] for h in hands),
        "serving": serving,
        "target_p99_ms": TARGET_P99_MS,
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in load_end],
        "load_during": load_during,
        "cores": os.cpu_count(),
        "per_segment": {
            s.key: {
                "size": steady["segments"][s.key]["size"],
                "cdp_first_s": first["segments"][s.key]["wall_s"],
                "cdp_steady_s": steady["segments"][s.key]["wall_s"],
                "cdp_query_s": steady["segments"][s.key]["query_s"],
                "hand_s": hand["segments"][s.key],
            }
            for s in segs
        },
    }
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
