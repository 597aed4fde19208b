"""Indexes set aside while most rows of a table are rewritten, then built again.

Keeping an index up to date costs a search and a rewrite of its B-tree for every row written; building it
again afterwards is one sort. For the profiles' name-search indexes (expressions over ``traits``, migration
0011) the difference is large: writing the traits of 141,000 profiles took 6.5 s with the three indexes in
place and 1.7 s dropping them and creating them again (1.1 s of it the three ``CREATE INDEX``).

`set_aside` drops the indexes of a table whose definition names a column, and records their definitions in
the same transaction; `restore` creates them again and forgets the record. A process killed in between
leaves the record behind: `Store.migrate`, which every opening of the facade runs, restores them. Meanwhile
every query still answers the same, only without those indexes' help.
"""

from __future__ import annotations

import re
import sqlite3

import orjson

KEY = "set_aside_indexes"
"""The ``resolution_state`` key holding the definitions (a JSON list of ``CREATE INDEX`` statements)."""

_CREATE = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?!IF\s+NOT\s+EXISTS)", re.IGNORECASE)


def recorded(conn: sqlite3.Connection) -> list[str]:
    """Definitions of the indexes set aside and not yet restored."""
    row = conn.execute("SELECT value FROM resolution_state WHERE key = ?", (KEY,)).fetchone()
    return list(orjson.loads(row[0])) if row else []


def set_aside(conn: sqlite3.Connection, table: str, column: str) -> int:
    """Inside a write transaction: drop ``table``'s indexes whose definition names ``column``; how many."""
    named = re.compile(rf"\b{re.escape(column)}\b")
    chosen = [
        (name, sql)
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
        ).fetchall()
        if named.search(sql)
    ]
    if not chosen:
        return 0
    definitions = list(dict.fromkeys([*recorded(conn), *(sql for _, sql in chosen)]))
    conn.execute(
        "INSERT INTO resolution_state (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (KEY, orjson.dumps(definitions).decode()),
    )
    for name, _ in chosen:
        conn.execute(f'DROP INDEX "{name}"')
    return len(chosen)


def restore(conn: sqlite3.Connection) -> int:
    """Inside a write transaction: create the indexes set aside again (those that still do not exist)."""
    definitions = recorded(conn)
    for sql in definitions:
        conn.execute(_CREATE.sub(lambda m: f"CREATE {m.group(1) or ''}INDEX IF NOT EXISTS ", sql, count=1))
    conn.execute("DELETE FROM resolution_state WHERE key = ?", (KEY,))
    return len(definitions)
