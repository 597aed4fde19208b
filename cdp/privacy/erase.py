"""Erasure of one person: every row of the resolved profile (and the profiles merged into it), in every table.

Steps, each committed on its own so a crash resumes where it stopped (the request row records the step and
the counts in the same transaction as the deletes):

1. ``find`` (``subject.find``): the profiles and every identifier, record and graph node they hold;
2. ``events``: the events, in chunks (a person with 100k events never holds the write lock for long);
3. ``rest``: everything else, in one transaction, with the ``profile.deleted`` outbox row;
4. the WAL is checkpointed and truncated.

The connection runs with ``PRAGMA secure_delete=ON``: deleted cells and freed pages are overwritten with zeros.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from cdp import outbox, record_ids
from cdp.chunks import chunked, marks
from cdp.privacy import subject

EVENTS_CHUNK = 5_000
Commit = Callable[[sqlite3.Connection, dict[str, int]], None]


def _count(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def delete_in(conn: sqlite3.Connection, table: str, column: str, values: Sequence[Any]) -> int:
    """``DELETE FROM table WHERE column IN values``, in chunks; the number of rows removed."""
    removed = 0
    for part in chunked(list(values)):
        removed += conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks(part)})", part).rowcount
    return removed


# The count a table's deletions add to (the consent tables count together); other tables count by their name.
COUNTED_AS = {"profile_consent": "consent", "consent_conflicts": "consent"}


def delete_each(
    conn: sqlite3.Connection, counts: Counter[str], steps: Sequence[tuple[str, str, Sequence[Any]]]
) -> None:
    """``delete_in`` for each ``(table, column, values)`` in order, counting what each removed."""
    for table, column, values in steps:
        counts[COUNTED_AS.get(table, table)] += delete_in(conn, table, column, values)


def ids_in(conn: sqlite3.Connection, table: str, column: str, values: Sequence[Any]) -> list[int]:
    """``SELECT id FROM table WHERE column IN values``, in chunks."""
    found: list[int] = []
    for part in chunked(list(values)):
        found += [int(r[0]) for r in conn.execute(f"SELECT id FROM {table} WHERE {column} IN ({marks(part)})", part)]
    return found


def delete_events_chunk(conn: sqlite3.Connection, profiles: Sequence[str], size: int = EVENTS_CHUNK) -> int:
    """Remove up to ``size`` of the profiles' events; 0 when none are left."""
    removed = 0
    for part in chunked(list(profiles)):
        left = size - removed
        if left <= 0:
            break
        removed += conn.execute(
            f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE profile_id IN ({marks(part)}) LIMIT ?)",
            [*part, left],
        ).rowcount
    return removed


def delete_rest(conn: sqlite3.Connection, work: dict[str, Any], request_id: str) -> dict[str, int]:
    """Everything else, in the caller's transaction (events that arrived since the last chunk included); the
    counts per kind."""
    work = subject.refresh(conn, work)
    profiles: list[str] = work["profiles"]
    identifier_ids: list[int] = [i[0] for i in work["identifiers"]]
    values = {i[2] for i in work["identifiers"]}
    records = [tuple(r) for r in work["records"]]
    nodes: list[str] = [record_ids.key(s, e) for s, e in records]
    nodes += [f"{kind}:{value}" for _, kind, value in work["identifiers"] if kind == "user_id"]
    counts: Counter[str] = Counter()
    while removed := delete_events_chunk(conn, profiles):
        counts["events"] += removed

    counts["source_records"] += delete_in(conn, "source_records", "profile_id", profiles)
    for source, external_id in records:
        counts["source_records"] += conn.execute(
            "DELETE FROM source_records WHERE source = ? AND external_id = ?", (source, external_id)
        ).rowcount
    delete_each(
        conn,
        counts,
        [
            ("identity_links", "a", identifier_ids),
            ("identity_links", "b", identifier_ids),
            ("identity_links", "origin", nodes),
            ("identifier_attributes", "identifier_id", identifier_ids),
            ("identifiers", "id", identifier_ids),
            ("identifiers", "profile_id", profiles),
            ("merges", "profile_id", profiles),
            ("merges", "other_id", profiles),
            ("identity_conflicts", "id", _conflicts(conn, values | set(profiles))),
            ("match_edges", "node_l", nodes),
            ("match_edges", "node_r", nodes),
            ("profile_groups", "profile_id", profiles),
            ("memberships", "profile_id", profiles),
            ("membership_changes", "profile_id", profiles),
            ("profile_consent", "profile_id", profiles),
            ("consent_conflicts", "profile_id", profiles),
            ("consent_conflicts", "other_id", profiles),
        ],
    )

    outbox_ids = ids_in(conn, "outbox", "profile_id", profiles)
    deliveries = set(ids_in(conn, "webhook_deliveries", "profile_id", profiles))
    deliveries.update(ids_in(conn, "webhook_deliveries", "outbox_id", outbox_ids))
    delete_each(
        conn,
        counts,
        [
            ("webhook_attempts", "delivery_id", sorted(deliveries)),
            ("webhook_deliveries", "id", sorted(deliveries)),
            ("outbox", "id", outbox_ids),
            ("profiles", "id", profiles),
        ],
    )
    counts["identity_model_terms"] += scrub_models(conn, work.get("fields", {}), values)

    for live in work["live"]:
        merged = [p for p in profiles if p != live and work["owner"].get(p) == live]
        outbox.write_deleted(conn, live, merged, request_id)
    return {k: v for k, v in counts.items() if v}


def scrub_models(conn: sqlite3.Connection, fields: dict[str, list[str]], identifiers: set[str]) -> int:
    """Stored identity models keep term-frequency tables (``term_frequencies: {column: {value: share}}``): the
    person's values leave them unless another record still holds the value. How many entries were removed."""
    candidates = {v.lower() for values in fields.values() for v in values} | {v.lower() for v in identifiers}
    if not candidates:
        return 0
    removed = 0
    still_held: dict[tuple[str, str], bool] = {}
    for version, text in conn.execute("SELECT version, model FROM identity_models").fetchall():
        if not any(c in text.lower() for c in candidates):
            continue
        model = orjson.loads(text)
        tables = model.get("term_frequencies") if isinstance(model, dict) else None
        if not isinstance(tables, dict):
            continue
        changed = False
        for column, table in tables.items():
            if not isinstance(table, dict):
                continue
            for term in [t for t in table if isinstance(t, str) and t.lower() in candidates]:
                key = (column, term.lower())
                if key not in still_held:
                    still_held[key] = _held_elsewhere(conn, column, term)
                if not still_held[key]:
                    del table[term]
                    removed += 1
                    changed = True
        if changed:
            conn.execute(
                "UPDATE identity_models SET model = ? WHERE version = ?", (orjson.dumps(model).decode(), version)
            )
    return removed


def _held_elsewhere(conn: sqlite3.Connection, column: str, term: str) -> bool:
    """Whether a remaining record (this person's are already gone) holds the value in that column."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(source_records)")}
    if column not in columns:
        return False
    if column in ("email", "phone"):  # indexed, and stored normalised
        return conn.execute(f"SELECT 1 FROM source_records WHERE {column} = ? LIMIT 1", (term,)).fetchone() is not None
    row = conn.execute(f"SELECT 1 FROM source_records WHERE lower({column}) = ? LIMIT 1", (term.lower(),)).fetchone()
    return row is not None


def _conflicts(conn: sqlite3.Connection, needles: set[str]) -> list[int]:
    """Conflict rows naming one of the person's identifier values or profile ids (in any of their texts)."""
    if not needles:
        return []
    return [
        row[0]
        for row in conn.execute("SELECT id, identifier_value, profile_ids, message, origin FROM identity_conflicts")
        if any(needle in (text or "") for text in row[1:] for needle in needles)
    ]
