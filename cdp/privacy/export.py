"""Access and portability: one JSON document holding everything stored about a person.

Written to a file of its own (mode 0600) next to the database, streamed (a person with 100k events never sits
in memory at once), served by ``GET /v1/privacy/requests/{id}/download`` until it expires, then removed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from cdp.chunks import chunked, marks
from cdp.privacy import consent
from cdp.timeutil import now_iso

_JSON_COLUMNS = ("properties", "traits", "context", "integrations", "extra", "quality_flags", "payload", "details",
                 "computed", "scores", "definition")  # fmt: skip


def _rows(conn: sqlite3.Connection, sql: str, params: list[Any]) -> Iterator[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    columns = [d[0] for d in cursor.description or ()]
    for row in cursor:
        item = dict(zip(columns, row, strict=True))
        for key in _JSON_COLUMNS:
            if isinstance(item.get(key), str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    item[key] = orjson.loads(item[key])
        yield item


def _in(conn: sqlite3.Connection, sql: str, ids: list[str]) -> Iterator[dict[str, Any]]:
    """``sql`` has one ``{marks}`` placeholder for an IN list of the profile ids."""
    for part in chunked(ids):
        yield from _rows(conn, sql.format(marks=marks(part)), part)


def write(
    conn: sqlite3.Connection, work: dict[str, Any], path: Path, request_id: str, summary: dict[str, Any]
) -> dict[str, int]:
    """Write the export of the work's profiles to ``path`` (``summary`` first: the profiles as the API shows
    them, with their traits' sources); the counts per kind."""
    ids: list[str] = work["profiles"]
    counts: dict[str, int] = {}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # two resumers never share one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(b'{"request_id": ' + orjson.dumps(request_id) + b', "generated_at": ' + orjson.dumps(now_iso()))
        for key, value in summary.items():
            out.write(b", " + orjson.dumps(key) + b": " + orjson.dumps(value, default=str))
        sections: list[tuple[str, str]] = [
            ("profiles", "SELECT id, created_at, updated_at, merged_into, traits, computed, scores FROM profiles"
                         " WHERE id IN ({marks})"),
            ("identifiers", "SELECT type, value, profile_id, first_seen FROM identifiers"
                            " WHERE profile_id IN ({marks})"),
            ("records", "SELECT * FROM source_records WHERE profile_id IN ({marks})"),
            ("events", "SELECT * FROM events WHERE profile_id IN ({marks}) ORDER BY timestamp, id"),
            ("segments", "SELECT m.segment_key, s.name, m.profile_id, m.entered_at FROM memberships m"
                         " JOIN segments s ON s.key = m.segment_key WHERE m.profile_id IN ({marks})"),
            ("segment_history", "SELECT segment_key, profile_id, change, at FROM membership_changes"
                                " WHERE profile_id IN ({marks}) ORDER BY id"),
            ("merges", "SELECT kind, profile_id, other_id, reason, details, created_at FROM merges"
                       " WHERE profile_id IN ({marks}) OR other_id IN ({marks}) ORDER BY id"),
            ("webhook_notifications", "SELECT o.message_id, o.type, o.segment_key, o.payload, o.created_at,"
                                      " (SELECT json_group_array(json_object('endpoint_id', d.endpoint_id, 'status',"
                                      " d.status, 'finished_at', d.finished_at)) FROM webhook_deliveries d"
                                      " WHERE d.outbox_id = o.id) AS deliveries"
                                      " FROM outbox o WHERE o.profile_id IN ({marks}) ORDER BY o.id"),
        ]  # fmt: skip
        for name, sql in sections:
            counts[name] = _section(out, name, conn, sql, ids)
        given = consent.consent_of(conn, ids)
        details = {pid: consent.details(conn, pid) for pid in given}
        out.write(b', "consent": ' + orjson.dumps(details))
        counts["consent"] = sum(len(v) for v in given.values())
        out.write(b', "counts": ' + orjson.dumps(counts) + b"}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return counts


def _section(out: IO[bytes], name: str, conn: sqlite3.Connection, sql: str, ids: list[str]) -> int:
    out.write(b', "' + name.encode() + b'": [')
    n = 0
    if "OR other_id IN ({marks})" in sql:  # two IN lists
        for part in chunked(ids):
            for item in _rows(conn, sql.format(marks=marks(part)), [*part, *part]):
                out.write((b", " if n else b"") + orjson.dumps(item, default=str))
                n += 1
    else:
        for item in _in(conn, sql, ids):
            if name == "webhook_notifications" and isinstance(item.get("deliveries"), str):
                item["deliveries"] = orjson.loads(item["deliveries"])
            out.write((b", " if n else b"") + orjson.dumps(item, default=str))
            n += 1
    out.write(b"]")
    return n
