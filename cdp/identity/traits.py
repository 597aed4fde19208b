"""Unified traits (survivorship) and computed traits of a profile.

Survivorship, per trait, among the non-empty values of the profile's records and identify events:

1. ``trait_priority`` (per trait, a list of sources): a listed source beats an unlisted one, an
   earlier-listed one a later one. Sources are CRM sources (``salesforce``) and write-key names (``web``).
2. ``trait_majority`` (a list of traits): for these, a value seen in more records and events beats one
   seen in fewer (a one-off typo loses to the spelling most sources agree on).
3. The most recent value wins: a record's last change (``updated_at``), an event's ``timestamp``.
4. Ties on time (rows of one import or batch share it) go to the one stored later: the record or event
   with the higher id, i.e. the later row of the file or batch.

``explain`` says, for each trait, which record or event it came from and which of these rules chose it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from cdp.quality import CANONICAL_COLUMNS
from cdp.timeutil import parse_ts

# Segment's reserved trait names -> our canonical ones.
_SEGMENT_TRAITS = {
    "firstName": "first_name",
    "lastName": "last_name",
    "birthday": "birthday",
    "email": "email",
    "phone": "phone",
    "title": "title",
}
_SEGMENT_ADDRESS = {"street": "street", "city": "city", "postalCode": "postal_code", "postal_code": "postal_code",
                    "country": "country"}  # fmt: skip
ORDER_EVENT = "Order Completed"


@dataclass(frozen=True)
class TraitSource:
    source: str
    at: str
    values: Mapping[str, Any]  # flat, dotted keys (address.city)
    seq: int = 0  # the record's or event's id: later rows of one import or batch win ties on time
    ref: Mapping[str, Any] | None = None  # where the values come from: {"record": {...}} or {"event": {...}}


def flatten_event_traits(traits: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in traits.items():
        if key == "address" and isinstance(value, Mapping):
            for sub, sub_value in value.items():
                out[f"address.{_SEGMENT_ADDRESS.get(sub, sub)}"] = sub_value
        elif key == "company" and isinstance(value, Mapping):
            if value.get("name") is not None:
                out["company"] = value["name"]
        else:
            out[_SEGMENT_TRAITS.get(key, key)] = value
    return out


def identify_values(traits: str | None, context: str | None) -> dict[str, Any]:
    """Flat canonical traits of a stored identify event (``context.traits`` first, ``traits`` win)."""
    values: dict[str, Any] = {}
    ctx = orjson.loads(context) if context else {}
    if isinstance(ctx.get("traits"), dict):
        values.update(flatten_event_traits(ctx["traits"]))
    if traits:
        values.update(flatten_event_traits(orjson.loads(traits)))
    return values


def unify(
    sources: Iterable[TraitSource], priority: Mapping[str, list[str]], majority: Collection[str] = ()
) -> dict[str, Any]:
    """Merged traits, nested (``{"address": {"city": ...}}``)."""
    if isinstance(sources, list) and len(sources) == 1:  # nothing to choose between (most profiles)
        return unify_one(sources[0].values)
    return _nested((key, value) for key, (value, _, _) in _choose(sources, priority, majority).items())


def _choose(
    sources: Iterable[TraitSource], priority: Mapping[str, list[str]], majority: Collection[str]
) -> dict[str, tuple[Any, TraitSource, tuple[int, int, str, int]]]:
    """Per flat trait key: the winning value, its source and its score (see the module's rules)."""
    listed = list(sources)
    counts: dict[tuple[str, str], int] = {}
    if majority:
        for src in listed:
            for key, value in src.values.items():
                if key in majority and value is not None and value != "":
                    counts[key, _plain(value)] = counts.get((key, _plain(value)), 0) + 1
    best: dict[str, tuple[Any, TraitSource, tuple[int, int, str, int]]] = {}
    for src in listed:
        for key, value in src.values.items():
            if value is None or value == "":
                continue
            order = priority.get(key)
            rank = order.index(src.source) if order and src.source in order else len(order or ())
            seen = counts.get((key, _plain(value)), 0) if key in majority else 0
            score = (-rank, seen, src.at, src.seq)
            if key not in best or score > best[key][2]:
                best[key] = (value, src, score)
    return best


def _plain(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else orjson.dumps(value).decode()


def explain(
    sources: Iterable[TraitSource], priority: Mapping[str, list[str]], majority: Collection[str] = ()
) -> dict[str, dict[str, Any]]:
    """Per flat trait key (``address.city``): its value, where it came from and the rule that chose it."""
    listed = list(sources)
    out: dict[str, dict[str, Any]] = {}
    for key, (value, src, score) in sorted(_choose(listed, priority, majority).items()):
        rivals = [
            s for s in listed if s is not src and s.values.get(key) not in (None, "") and s.values.get(key) != value
        ]
        if not rivals:
            rule = "only value"
        elif priority.get(key) and src.source in priority[key]:
            rule = f"source priority ({', '.join(priority[key])})"
        elif key in majority and score[1] > 1:
            rule = f"majority (seen in {score[1]} records or events)"
        elif any(s.at == src.at for s in rivals):
            rule = "latest (same time: the later row of the import or batch)"
        else:
            rule = "latest"
        out[key] = {"value": value, "source": src.source, "at": src.at, **(src.ref or {}), "rule": rule}
    return out


def unify_one(values: Mapping[str, Any]) -> dict[str, Any]:
    """`unify` of a single source's values."""
    return _nested([(k, v) for k, v in values.items() if v is not None and v != ""])


def _nested(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(items):  # keys are unique: values are never compared
        if key.startswith("address."):
            out.setdefault("address", {})[key.removeprefix("address.")] = value
        else:
            out[key] = value
    return out


def record_source(row: Mapping[str, Any]) -> TraitSource:
    values: dict[str, Any] = dict(orjson.loads(row["traits"] or "{}"))
    for field, column in CANONICAL_COLUMNS.items():
        if row.get(column) is not None:
            values[field] = row[column]
    ref = {"record": {"source": row["source"], "external_id": row.get("external_id")}}
    return TraitSource(row["source"], row["updated_at"], values, int(row.get("id") or 0), ref)


RECORD_COLUMNS = ("source", "updated_at", "traits", *CANONICAL_COLUMNS.values(), "id", "external_id")
"""The source_records columns `record_source_of` reads, in its order."""
_CANONICAL_AT = tuple((field, 3 + i) for i, field in enumerate(CANONICAL_COLUMNS))
_ID_AT = 3 + len(CANONICAL_COLUMNS)


def record_source_of(row: Sequence[Any], offset: int = 0) -> TraitSource:
    """`record_source` of a row holding `RECORD_COLUMNS` from ``offset`` on (no dictionary per row)."""
    ref = {"record": {"source": row[offset], "external_id": row[offset + _ID_AT + 1]}}
    return TraitSource(row[offset], row[offset + 1], record_values(row, offset), int(row[offset + _ID_AT]), ref)


def event_source(event_id: int, message_id: str | None, source: str, at: str, values: Mapping[str, Any]) -> TraitSource:
    """An identify event's traits as a source."""
    return TraitSource(source, at, values, event_id, {"event": {"id": event_id, "message_id": message_id}})


def record_values(row: Sequence[Any], offset: int = 0) -> dict[str, Any]:
    """The trait values of a row holding `RECORD_COLUMNS` from ``offset`` on."""
    values: dict[str, Any] = dict(orjson.loads(row[offset + 2] or "{}"))
    for field, at in _CANONICAL_AT:
        if (value := row[offset + at]) is not None:
            values[field] = value
    return values


def profile_sources(conn: sqlite3.Connection, profile_id: str) -> list[TraitSource]:
    out: list[TraitSource] = []
    cursor = conn.execute("SELECT * FROM source_records WHERE profile_id = ?", (profile_id,))
    columns = [d[0] for d in cursor.description]
    for row in cursor:
        out.append(record_source(dict(zip(columns, row, strict=True))))
    for event_id, message_id, source, at, traits, context in conn.execute(
        "SELECT id, message_id, source, timestamp, traits, context FROM events WHERE profile_id = ?"
        " AND type = 'identify'",
        (profile_id,),
    ):
        out.append(event_source(event_id, message_id, source, at, identify_values(traits, context)))
    return out


COMPUTED_SQL = """
SELECT profile_id,
       min(timestamp) AS first_seen,
       max(timestamp) AS last_seen,
       count(*) AS event_count,
       sum(type = 'track' AND event = :order) AS order_count,
       sum(CASE WHEN type = 'track' AND event = :order
                THEN coalesce(json_extract(properties, '$.revenue'), 0) ELSE 0 END) AS total_revenue,
       max(CASE WHEN type = 'track' AND event = :order THEN timestamp END) AS last_order_at
FROM events WHERE profile_id {where} GROUP BY profile_id
"""
COUNTS_SQL = """
SELECT profile_id, event, count(*) FROM events
WHERE profile_id {where} AND type = 'track' GROUP BY profile_id, event
"""


def _days(now: datetime, iso: str | None) -> float | None:
    when = parse_ts(iso)
    return None if when is None else round((now - when).total_seconds() / 86400, 2)


def computed_rows(
    conn: sqlite3.Connection, now: datetime, profile_id: str | Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Computed traits per profile (one profile, the ones listed, or all with events)."""
    where: str
    params: dict[str, Any]
    if profile_id is None:
        where, params = "IS NOT NULL", {}
    elif isinstance(profile_id, str):
        where, params = "= :profile", {"profile": profile_id}
    else:  # a few thousand at most per call (one index lookup each, two queries in all)
        params = {f"p{k}": pid for k, pid in enumerate(profile_id)}
        where = f"IN ({', '.join(':' + name for name in params)})"
    out = {}
    counts: dict[str, dict[str, int]] = {}
    for pid, event, n in conn.execute(COUNTS_SQL.format(where=where), params):
        counts.setdefault(pid, {})[event] = n
    for row in conn.execute(COMPUTED_SQL.format(where=where), {"order": ORDER_EVENT, **params}):
        out[row[0]] = computed_from(now, row[1:], counts.get(row[0], {}))
    return out


def computed_aggregates(
    conn: sqlite3.Connection, wanted: Collection[str]
) -> dict[str, tuple[tuple[Any, ...], dict[str, int]]]:
    """The raw event aggregates of the ``wanted`` profiles that have events, in one pass over all events
    (for `computed_from` later: rows take far less memory than the finished dictionaries)."""
    out: dict[str, tuple[tuple[Any, ...], dict[str, int]]] = {}
    for row in conn.execute(COMPUTED_SQL.format(where="IS NOT NULL"), {"order": ORDER_EVENT}):
        if row[0] in wanted:
            out[row[0]] = (row[1:], {})
    for pid, event, n in conn.execute(COUNTS_SQL.format(where="IS NOT NULL")):
        if pid in out:
            out[pid][1][event] = n
    return out


def computed_from(now: datetime, aggregates: Sequence[Any], counts: dict[str, int]) -> dict[str, Any]:
    """Computed traits from one row of `COMPUTED_SQL` (without the profile id) and event counts by name."""
    first, last, events, orders, revenue, last_order = aggregates
    orders = int(orders or 0)
    revenue = round(float(revenue or 0.0), 2)
    return {
        "first_seen": first,
        "last_seen": last,
        "event_count": events,
        "event_counts": counts,
        "order_count": orders,
        "total_revenue": revenue,
        "average_order_value": round(revenue / orders, 2) if orders else None,
        "last_order_at": last_order,
        "days_since_last_order": _days(now, last_order),
        "rfm": {"recency_days": _days(now, last_order or last), "frequency": orders, "monetary": revenue},
    }
