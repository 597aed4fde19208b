"""Migration 0012's Python step (`cdp.record_ids`): what its SQL cannot rewrite cleanly.

``migrations/0012_record_ids.sql`` rewrites record identifiers and keys of sources holding ``:`` or ``%`` and
leaves the map it used in ``temp.record_rekey`` / ``temp.record_rekey_keys``. This step, in the same
transaction, then

1. parts records that shared one identifier (source ``crm:eu`` with id ``1`` and source ``crm`` with id
   ``eu:1`` were both ``crm:eu:1``): each now has its identifier (the SQL made it), and here gets back its own
   links (to its email and phone) and attributes (birthday, first name), read from its stored record. They stay
   in one profile until the next ``cdp resolve``, which parts them unless other evidence joins them;
2. rewrites the keys held inside JSON: merge history details and manual actions (what an undo restores).

Nothing happens on a store without such sources (the map is empty).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import orjson

from cdp import record_ids
from cdp.chunks import chunked, marks
from cdp.identity import names

_JSON_COLUMNS = (("merges", "details"), ("manual_actions", "state"))
_ROWS = 2000


def run(conn: sqlite3.Connection) -> None:
    """In migration 0012's transaction, after its SQL."""
    if conn.execute("SELECT 1 FROM temp.record_rekey LIMIT 1").fetchone() is not None:
        part_shared(conn)
        if conn.execute("SELECT 1 FROM temp.record_rekey_keys LIMIT 1").fetchone() is not None:
            for table, column in _JSON_COLUMNS:
                _rewrite_json(conn, table, column)
    conn.execute("DROP TABLE temp.record_rekey_keys")
    conn.execute("DROP TABLE temp.record_rekey")


def part_shared(conn: sqlite3.Connection) -> int:
    """Give each record that shared an identifier its own links and attributes; returns how many values were
    shared."""
    shared = [r[0] for r in conn.execute("SELECT DISTINCT old FROM temp.record_rekey WHERE plain = 1 OR first = 0")]
    for old in shared:
        source, _, external_id = old.partition(":")
        claimants = [
            (int(r[0]), str(r[1]), str(r[2]), r[3], r[4], r[5], r[6])
            for r in conn.execute(
                "SELECT id, source, external_id, email, phone, first_name, birthday FROM source_records"
                " WHERE id IN (SELECT record_id FROM temp.record_rekey WHERE old = ?)"
                " OR (source = ? AND external_id = ? AND instr(source, '%') = 0) ORDER BY id",
                (old, source, external_id),
            )
        ]
        idents = {}
        for claimant in claimants:
            row = conn.execute(
                "SELECT id FROM identifiers WHERE type = 'record' AND value = ?",
                (record_ids.value(claimant[1], claimant[2]),),
            ).fetchone()
            if row is not None:
                idents[claimant[0]] = int(row[0])
        # The identifier that held them all kept its id: the ordinary record's, else the first escaped one's.
        plain = [c for c in claimants if ":" not in c[1] and "%" not in c[1]]
        owner = plain[0] if plain else claimants[0]
        held = idents.get(owner[0])
        if held is None:
            continue
        links = {
            int(b): (kind, created)
            for b, kind, created in conn.execute("SELECT b, kind, created_at FROM identity_links WHERE a = ?", (held,))
        }
        mine = {c[0]: _linked(conn, c, links) for c in claimants}
        others = set().union(*(mine[c[0]] for c in claimants if c is not owner)) - mine[owner[0]]
        conn.executemany("DELETE FROM identity_links WHERE a = ? AND b = ?", [(held, b) for b in sorted(others)])
        conn.execute("DELETE FROM identifier_attributes WHERE identifier_id = ?", (held,))
        for claimant in claimants:
            ident = idents.get(claimant[0])
            if ident is None:
                continue
            if ident != held:
                conn.executemany(
                    "INSERT OR IGNORE INTO identity_links (a, b, kind, origin, created_at) VALUES (?, ?, ?, ?, ?)",
                    [
                        (ident, b, links[b][0], record_ids.key(claimant[1], claimant[2]), links[b][1])
                        for b in sorted(mine[claimant[0]])
                    ],
                )
            attributes = [("birthday", claimant[6]), ("first_name", names.clean(claimant[5]))]
            conn.executemany(
                "INSERT OR IGNORE INTO identifier_attributes (identifier_id, type, value) VALUES (?, ?, ?)",
                [(ident, kind, value) for kind, value in attributes if value],
            )
    return len(shared)


def _linked(conn: sqlite3.Connection, claimant: tuple[Any, ...], links: dict[int, Any]) -> set[int]:
    """The identifiers the shared identifier links that this record carries (its email and phone)."""
    out: set[int] = set()
    for kind, value in (("email", claimant[3]), ("phone", claimant[4])):
        if value:
            row = conn.execute("SELECT id FROM identifiers WHERE type = ? AND value = ?", (kind, value)).fetchone()
            if row is not None and int(row[0]) in links:
                out.add(int(row[0]))
    return out


def _rewrite_json(conn: sqlite3.Connection, table: str, column: str) -> None:
    """Record keys (and ``{"type": "record", "value": ...}`` values) inside a JSON column, rewritten."""
    last = 0
    while True:
        rows = conn.execute(
            f"SELECT id, {column} FROM {table} WHERE id > ? AND {column} LIKE '%record%' ORDER BY id LIMIT ?",
            (last, _ROWS),
        ).fetchall()
        if not rows:
            return
        last = int(rows[-1][0])
        docs = [(int(i), orjson.loads(text)) for i, text in rows if text]
        found = {s for _, doc in docs for s in _strings(doc)}
        keys, values = _maps(conn, found)
        if not keys and not values:
            continue
        changed = []
        for i, doc in docs:
            new = _rewrite(doc, keys, values)
            if new != doc:
                changed.append((orjson.dumps(new).decode(), i))
        conn.executemany(f"UPDATE {table} SET {column} = ? WHERE id = ?", changed)


def _strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, list):
        for item in doc:
            yield from _strings(item)
    elif isinstance(doc, dict):
        for item in doc.values():
            yield from _strings(item)


def _maps(conn: sqlite3.Connection, found: set[str]) -> tuple[dict[str, str], dict[str, str]]:
    keys: dict[str, str] = {}
    values: dict[str, str] = {}
    wanted = sorted(found)
    for part in chunked(wanted):
        keys.update(
            conn.execute(f"SELECT old_key, new_key FROM temp.record_rekey_keys WHERE old_key IN ({marks(part)})", part)
        )
        values.update(
            conn.execute(
                f"SELECT old, new FROM temp.record_rekey WHERE plain = 0 AND first = 1 AND old IN ({marks(part)})", part
            )
        )
    return keys, values


def _rewrite(doc: Any, keys: dict[str, str], values: dict[str, str]) -> Any:
    if isinstance(doc, str):
        return keys.get(doc, doc)
    if isinstance(doc, list):
        return [_rewrite(item, keys, values) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out = {k: _rewrite(v, keys, values) for k, v in doc.items()}
    if out.get("type") == "record" and isinstance(doc.get("value"), str):
        out["value"] = values.get(doc["value"], doc["value"])
    if isinstance(out.get("node_l"), str) and isinstance(out.get("node_r"), str) and out["node_l"] > out["node_r"]:
        out["node_l"], out["node_r"] = out["node_r"], out["node_l"]  # a stored label keeps node_l < node_r
    return out
