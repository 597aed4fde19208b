"""Human identity labels: a ``match`` is a must-link and a ``no_match`` a cannot-link between two identifiers.

A label names two identifiers by their keys (``type:value``: ``record:<source>:<external_id>`` as
`cdp.record_ids` writes it,
``user_id:<id>``, ``email:<address>`` ...), one label per pair (the latest decision wins), with who
(the API key id, or ``cli``) and when. Every full run (`cdp.identity.cluster.cluster`) and the real-time
linker honour them. Files of labels (import and export) are CSV with the columns
``source_l,external_id_l,source_r,external_id_r,decision,note``; an identifier that is not a CRM record
is written with ``@<type>`` as its source (``@user_id,42``).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cdp import record_ids
from cdp.errors import CDPError, InvalidInput
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.store import Store
from cdp.timeutil import now_iso

DECISIONS = ("match", "no_match")
FILE_COLUMNS = ("source_l", "external_id_l", "source_r", "external_id_r", "decision", "note")


class LabelConflict(CDPError):
    """A label that contradicts itself (an identifier with itself, or an unknown identifier)."""

    code = "label_conflict"
    status = 409


def pair(a: str, b: str) -> tuple[str, str]:
    """The stored order of a pair of identifier keys."""
    return (a, b) if a <= b else (b, a)


def record_key(source: str, external_id: str) -> str:
    """The identifier key of a CRM record, or of another identifier written as ``@<type>``."""
    if source.startswith("@"):
        return f"{source[1:]}:{external_id}"
    return record_ids.key(source, external_id)


def split_key(key: str) -> tuple[str, str]:
    """``(source, external_id)`` of an identifier key, as label files write it."""
    record = record_ids.parse_key(key)
    if record is not None:
        return record
    kind, _, value = key.partition(":")
    return f"@{kind}", value


def write(
    conn: sqlite3.Connection,
    a: str,
    b: str,
    decision: str,
    origin: str,
    *,
    key_id: str | None,
    note: str | None = None,
    action_id: int | None = None,
    now: str | None = None,
) -> tuple[str, str, str | None]:
    """Store (or replace) the label of a pair; returns the pair and the decision it had before (if any)."""
    if decision not in DECISIONS:
        raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}", {"field": "decision"})
    if a == b:
        raise LabelConflict(f"{a} cannot be labelled against itself", {"left": a, "right": b})
    left, right = pair(a, b)
    before = conn.execute(
        "SELECT decision FROM identity_labels WHERE node_l = ? AND node_r = ?", (left, right)
    ).fetchone()
    conn.execute(
        "INSERT INTO identity_labels (node_l, node_r, decision, origin, action_id, note, key_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_l, node_r) DO UPDATE SET decision = excluded.decision,"
        " origin = excluded.origin, action_id = excluded.action_id, note = excluded.note, key_id = excluded.key_id,"
        " created_at = excluded.created_at",
        (left, right, decision, origin, action_id, note, key_id, now or now_iso()),
    )
    return left, right, before[0] if before else None


def constraints(conn: sqlite3.Connection) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(must-links, cannot-links) as pairs of identifier keys, oldest label first."""
    must: list[tuple[str, str]] = []
    cannot: list[tuple[str, str]] = []
    for left, right, decision in conn.execute("SELECT node_l, node_r, decision FROM identity_labels ORDER BY id"):
        (must if decision == "match" else cannot).append((left, right))
    return must, cannot


def cannot_link_between(conn: sqlite3.Connection, left: Iterable[str], right: Iterable[str]) -> bool:
    """Is there a cannot-link between any identifier key of ``left`` and any of ``right``?"""
    lset, rset = set(left), set(right)
    if not lset or not rset:
        return False
    small = lset if len(lset) <= len(rset) else rset
    other = rset if small is lset else lset
    marks = ",".join("?" * len(small))
    for node_l, node_r in conn.execute(
        f"SELECT node_l, node_r FROM identity_labels WHERE decision = 'no_match' AND (node_l IN ({marks})"
        f" OR node_r IN ({marks}))",
        [*small, *small],
    ):
        if (node_l in small and node_r in other) or (node_r in small and node_l in other):
            return True
    return False


def profile_keys(conn: sqlite3.Connection, profile_id: str) -> list[str]:
    """Identifier keys of a profile."""
    return [
        f"{t}:{v}" for t, v in conn.execute("SELECT type, value FROM identifiers WHERE profile_id = ?", (profile_id,))
    ]


class Labels:
    """``CDP.labels``: list, import and export the human labels."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def page(self, *, limit: int | None = None, cursor: str | None = None) -> Page[dict[str, Any]]:
        limit = check_limit(limit)
        position = decode_cursor(cursor) or {}
        after = position.get("id", 0)
        if not isinstance(after, int):
            raise InvalidInput("the cursor is not one this API returned", {"field": "cursor"})
        rows = self.store.query(
            "SELECT id, node_l, node_r, decision, origin, action_id, note, key_id, created_at FROM identity_labels"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit + 1),
        )
        data = [_label(dict(r)) for r in rows[:limit]]
        return Page(data, encode_cursor({"id": data[-1]["id"]}) if len(rows) > limit else None)

    def all(self) -> list[dict[str, Any]]:
        return [
            _label(dict(r))
            for r in self.store.query(
                "SELECT id, node_l, node_r, decision, origin, action_id, note, key_id, created_at"
                " FROM identity_labels ORDER BY id"
            )
        ]

    def export_csv(self) -> str:
        """Every label as CSV (`FILE_COLUMNS`, then origin, key_id and created_at)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*FILE_COLUMNS, "origin", "key_id", "created_at"])
        for label in self.all():
            sl, el = split_key(label["left"])
            sr, er = split_key(label["right"])
            writer.writerow(
                [sl, el, sr, er, label["decision"], label["note"] or "", label["origin"], label["key_id"] or "",
                 label["created_at"]]
            )  # fmt: skip
        return out.getvalue()

    def import_file(self, path: Path, *, key_id: str | None) -> dict[str, int]:
        """Labels from a CSV file (`FILE_COLUMNS`; ``note`` optional). All or nothing: a bad row names its line."""
        if not path.is_file():
            raise InvalidInput(f"no such file: {path}", {"file": str(path)})
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in FILE_COLUMNS[:5] if c not in (reader.fieldnames or ())]
            if missing:
                raise InvalidInput(
                    f"{path.name} needs the columns {', '.join(FILE_COLUMNS[:5])} (missing {', '.join(missing)})",
                    {"file": str(path), "missing": missing},
                )
            rows = list(enumerate(reader, start=2))
        pairs: list[tuple[str, str, str, str | None]] = []
        for line, row in rows:
            values = {c: (row.get(c) or "").strip() for c in FILE_COLUMNS}
            empty = [c for c in FILE_COLUMNS[:5] if not values[c]]
            if empty:
                raise InvalidInput(
                    f"line {line} of {path.name}: {', '.join(empty)} is empty", {"line": line, "fields": empty}
                )
            decision = values["decision"].lower()
            if decision not in DECISIONS:
                raise InvalidInput(
                    f"line {line} of {path.name}: decision must be match or no_match, not {values['decision']!r}",
                    {"line": line, "field": "decision"},
                )
            a = record_key(values["source_l"], values["external_id_l"])
            b = record_key(values["source_r"], values["external_id_r"])
            if a == b:
                raise InvalidInput(f"line {line} of {path.name}: both sides are {a}", {"line": line})
            pairs.append((a, b, decision, values["note"] or None))

        def store(conn: sqlite3.Connection) -> dict[str, int]:
            now = now_iso()
            counts = {"labels": 0, "match": 0, "no_match": 0, "replaced": 0}
            for a, b, decision, note in pairs:
                _, _, before = write(conn, a, b, decision, "import", key_id=key_id, note=note, now=now)
                counts["labels"] += 1
                counts[decision] += 1
                counts["replaced"] += before is not None
            return counts

        return self.store.write(store)


def _label(row: dict[str, Any]) -> dict[str, Any]:
    left, right = row.pop("node_l"), row.pop("node_r")
    return {"id": row["id"], "left": left, "right": right, **{k: v for k, v in row.items() if k != "id"}}
