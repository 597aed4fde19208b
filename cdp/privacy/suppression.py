"""Suppression at the door: messages and records carrying a suppressed identifier are acknowledged and not stored.

Runs inside the ingest write transaction (the store's writer thread, or the ingest writer process): the list
is read once and kept as a set of salted hashes, reloaded only when ``suppression_version`` moves, so an
empty list costs one small query per transaction and a long one a hash per identifier. SQLite only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from cdp import record_ids
from cdp.privacy.hashing import identifier_hash, salt
from cdp.quality import Tally

VERSION = "suppression_version"
_cache: dict[str, tuple[str, frozenset[str]]] = {}  # database path -> (version, hashes)
_legacy: dict[str, tuple[str, frozenset[str]]] = {}  # database path -> (version, record hashes before 0012)


def _path(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


def suppressed_hashes(conn: sqlite3.Connection) -> frozenset[str]:
    """The current suppression list (hashes), from the cache unless it changed."""
    row = conn.execute("SELECT value FROM privacy_state WHERE key = ?", (VERSION,)).fetchone()
    if row is None:  # a database from before migration 0008
        return frozenset()
    path = _path(conn)
    cached = _cache.get(path)
    if cached is not None and cached[0] == row[0]:
        return cached[1]
    hashes = frozenset(r[0] for r in conn.execute("SELECT hash FROM privacy_suppressions"))
    _cache[path] = (row[0], hashes)
    return hashes


def legacy_record_hashes(conn: sqlite3.Connection) -> frozenset[str]:
    """Record suppressions made before migration 0012, which hashed the unescaped ``source:external_id``
    (`cdp.record_ids.legacy_value`): a hash cannot be rewritten, so a record whose source holds ``:`` or ``%``
    is also checked against these (and only these)."""
    row = conn.execute("SELECT value FROM privacy_state WHERE key = ?", (VERSION,)).fetchone()
    if row is None:
        return frozenset()
    path = _path(conn)
    cached = _legacy.get(path)
    if cached is not None and cached[0] == row[0]:
        return cached[1]
    hashes = frozenset(
        r[0]
        for r in conn.execute(
            "SELECT hash FROM privacy_suppressions WHERE type = 'record' AND created_at <"
            " coalesce((SELECT applied_at FROM schema_migrations WHERE version = 12), '9999')"
        )
    )
    _legacy[path] = (row[0], hashes)
    return hashes


def legacy_record_hash(conn: sqlite3.Connection, key: bytes, value: str) -> str | None:
    """The pre-0012 suppression hash of a record identifier value, if it differs and one is stored."""
    parts = record_ids.parse(value)
    if parts is None or record_ids.legacy_value(*parts) == value:
        return None
    found = identifier_hash(key, "record", record_ids.legacy_value(*parts))
    return found if found in legacy_record_hashes(conn) else None


def bump(conn: sqlite3.Connection) -> None:
    """In a transaction that changed ``privacy_suppressions``: every writer reloads the list."""
    conn.execute("UPDATE privacy_state SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (VERSION,))


def is_suppressed(key: bytes, hashes: frozenset[str], identifiers: Sequence[tuple[str, str]]) -> bool:
    return any(identifier_hash(key, kind, value) in hashes for kind, value in identifiers)


def drop_suppressed_events(
    conn: sqlite3.Connection,
    fresh: list[int],
    observations: Sequence[Any],
    names: Sequence[tuple[str, str]],
    tally: Tally,
) -> list[int]:
    """``fresh`` without the messages that carry a suppressed identifier (counted as ``suppressed``)."""
    hashes = suppressed_hashes(conn)
    if not hashes or not fresh:
        return fresh
    key = salt(conn)
    kept: list[int] = []
    for index in fresh:
        if is_suppressed(key, hashes, observations[index][0]):
            source, name = names[index]
            tally.add("events", source, name, "suppressed")
            tally.add("events", source, name, "stored", -1)
        else:
            kept.append(index)
    return kept


def drop_suppressed_records(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]], tally: Tally
) -> list[tuple[Any, ...]]:
    """Record rows ``(source, external_id, email, phone, ...)`` without the suppressed ones (counted)."""
    hashes = suppressed_hashes(conn)
    if not hashes or not rows:
        return rows
    key = salt(conn)
    kept = []
    for row in rows:
        value = record_ids.value(row[0], row[1])
        identifiers = [("record", value)]
        if row[2]:
            identifiers.append(("email", row[2]))
        if row[3]:
            identifiers.append(("phone", row[3]))
        if is_suppressed(key, hashes, identifiers) or legacy_record_hash(conn, key, value) in hashes:
            tally.add("records", row[0], "", "received")
            tally.add("records", row[0], "", "suppressed")
        else:
            kept.append(row)
    return kept
